"""The HTTP port: the HTTP/JSON gateway built from the proto's google.api.http annotations,
Server-Sent Events, streamed uploads and downloads, signed download links, and the page."""
