"""Run by docker-compose's own Python (not pytest): what `docker-compose --profile P up` would start.

Prints JSON: the resolved compose file, and per profile the services `up` would start in order, with the
GPU device requests and network aliases compose would hand the engine. It uses docker-compose's library
the way its `up` does, up to the point where it would talk to the engine (there is none here).
Usage: python3 compose_project.py DIR COMPOSE_FILE PROFILE...
"""

import json
import sys

import yaml
from compose.config import config
from compose.config.environment import Environment
from compose.config.serialize import serialize_config
from compose.project import Project
from docker.errors import NotFound


class FreshEngine:
    """The one question compose asks the engine before `up` starts anything: is there a network of an
    older compose under the legacy name? On a fresh host, no."""

    _version = "1.41"

    def inspect_network(self, name: str) -> None:
        raise NotFound(f"network {name} not found")


def main(base_dir: str, compose_file: str, *profiles: str) -> None:
    def load() -> config.Config:
        return config.load(config.find(base_dir, [compose_file], Environment.from_env_file(base_dir)))

    # exactly what `docker-compose config` prints, as plain data
    out: dict = {"config": yaml.safe_load(serialize_config(load())), "profiles": {}}
    for profile in profiles:
        cfg = load()  # from_config rewrites the GPU requests in place: one fresh load per project, as in `up`
        project = Project.from_config("melstream", cfg, FreshEngine(), enabled_profiles=[profile] if profile else [])
        # raises ConfigurationError if a service depends on one the profile does not enable, as `up` does
        services = project.get_services(include_deps=True)
        out["profiles"][profile] = [
            {"name": s.name, "device_requests": s.options.get("device_requests") or [],
             "aliases": sorted({a for net in s.networks.values() for a in (net or {}).get("aliases") or []})}
            for s in services
        ]
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main(*sys.argv[1:])
