"""The container runtime: the sandbox, the Docker engine client, base images and artifact stores."""
