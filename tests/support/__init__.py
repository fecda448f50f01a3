"""Test infrastructure: throwaway PostgreSQL clusters and PgBouncer, never the shared server."""
