"""Live progress: one LISTEN connection per replica fanning job changes out to watchers."""
