"""HTTP: JSON API, server-rendered pages, WebSocket."""
