"""What ``formula-ops serve`` adds: an embedded Redis, the local seed and a sample service."""
