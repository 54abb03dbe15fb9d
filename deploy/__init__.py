"""Deployment beyond one machine: Kubernetes manifests (Kustomize) generated from typed settings and validated offline."""
