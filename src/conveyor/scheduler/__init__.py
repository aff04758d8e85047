"""Maintenance on the elected leader: promotion, cron, rescue of lost leases, pruning."""
