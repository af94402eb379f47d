"""HTTP layer: thin Litestar controllers over the services; errors become RFC 9457 problems."""
