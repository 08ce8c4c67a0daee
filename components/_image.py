"""The one runtime image every kfnas component runs in: ``<registry>/kfnas:<kfnas version>``.

The image is built from the repository's ``Dockerfile`` (see ``images/README.md``) and tagged with
the package version, so a compiled pipeline always names the image of the code that compiled it.

The registry is read from the environment variable ``KFNAS_IMAGE_REGISTRY`` when this module is
first imported, that is when a pipeline is compiled; without it the image is
``ghcr.io/kfnas/kfnas:<version>``. To compile for your own registry::

    export KFNAS_IMAGE_REGISTRY=us-docker.pkg.dev/my-project/nas
    kfnas compile --profile gke-gpu -o pipeline.yaml

To change the naming scheme, change ``IMAGE`` here: every component takes it from this module.
"""

import os

from kfnas.version import __version__

#: The environment variable that names the registry (and path) the image is pushed to.
REGISTRY_ENV = "KFNAS_IMAGE_REGISTRY"

#: The registry used when ``KFNAS_IMAGE_REGISTRY`` is not set.
DEFAULT_REGISTRY = "ghcr.io/kfnas"

#: The registry in force for this process.
REGISTRY = (os.environ.get(REGISTRY_ENV, "").strip() or DEFAULT_REGISTRY).rstrip("/")

#: The image of every component.
IMAGE = f"{REGISTRY}/kfnas:{__version__}"
