#!/usr/bin/python3
# compose-profiles.py FILE...: load the compose files once with docker-compose's
# own library (1.29, the same validation and interpolation as
# `docker-compose config`), then, for every combination of the profiles they
# define (2^n of them, none included), build the project as `up` does and
# resolve every enabled service's dependencies: a service that depends on one
# of a disabled profile fails here as `up` would ("... is not enabled by the
# active profiles"), which `config -q` does not check. One process instead of
# 2^n docker-compose runs. Run with Debian's python3 (/usr/bin/python3).
#   --require P   profile P is always on (an overlay meant for it, e.g. fleet)
import itertools
import logging
import os
import sys

from compose.config import config as cconfig
from compose.cli.docker_client import docker_client
from compose.config.environment import Environment
from compose.project import Project

logging.getLogger("compose").setLevel(logging.ERROR)  # no warnings about absent secret files
args = sys.argv[1:]
required = []
while len(args) >= 2 and args[0] == "--require":
    required.append(args[1])
    args = args[2:]
files = args
if not files:
    sys.exit("usage: compose-profiles.py FILE...")
project_dir = os.path.dirname(os.path.abspath(files[0]))
env = Environment.from_env_file(project_dir)
details = cconfig.find(project_dir, [os.path.abspath(f) for f in files], env)
cfg = cconfig.load(details, interpolate=True)
# The engine is only asked about networks (read only).
client = docker_client(env)
profiles = sorted({p for s in cfg.services for p in s.get("profiles", [])} - set(required))
n = 0
for r in range(len(profiles) + 1):
    for combo in itertools.combinations(profiles, r):
        combo = tuple(required) + combo
        project = Project.from_config("profilecheck", cfg, client, enabled_profiles=list(combo))
        try:
            services = project.get_services(include_deps=True, auto_enable_profiles=False)
        except Exception as e:  # ConfigurationError, NoSuchService
            sys.exit("%s with profiles %s: %s" % (" ".join(files), ",".join(combo) or "(none)", e))
        if not services:
            sys.exit("%s with profiles %s: no service" % (" ".join(files), ",".join(combo) or "(none)"))
        n += 1
print("ok  %s: %d profile combinations of %s%s, every dependency enabled" % (
    " ".join(files), n, " ".join(profiles), "".join(" (always %s)" % p for p in required)))
