from importd_server.cli import main

main()
