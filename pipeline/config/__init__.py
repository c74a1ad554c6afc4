"""The config layer: params.yaml read (params), validated into typed sections (sections), profiles."""
