"""Built-in workloads: small real PyTorch trainings that follow the workload API."""
