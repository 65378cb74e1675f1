"""The multi-replica drill: PostgreSQL, PgBouncer, N `keelson serve` processes and haproxy on
127.0.0.1, Kubernetes' lifecycle played on them under constant traffic (see __main__.py)."""
