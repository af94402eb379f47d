"""The ingestion worker: claims jobs, parses, chunks, embeds and indexes documents.

Imports ``ragsvc``'s core; ``ragsvc`` never imports ``ingest``.
"""
