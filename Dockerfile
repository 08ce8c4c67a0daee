# THE runtime image: every KFP component of kfnas runs in it, on GPU nodes and CPU nodes alike.
# Tag: <registry>/kfnas:<kfnas.version.__version__> (see images/README.md). Build from the repository
# root:  docker build -t REGISTRY/kfnas:0.1.0 .
#
# The base is the GPU TensorFlow image of the pinned TensorFlow version (images/constraints.txt pins
# tensorflow==2.20.0, so pip keeps the base image's TensorFlow instead of replacing it).
FROM tensorflow/tensorflow:2.20.0-gpu

# kfnas supports one Python, the one its constraints were resolved for; fail the build early otherwise.
RUN python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), \
    "kfnas needs Python 3.11, this base image has " + sys.version.split()[0]'

# TF_USE_LEGACY_KERAS: tf.keras is tf_keras (Keras 2, what tf-models-official and kfnas build with);
# without it `import tensorflow` also loads Keras 3, ~1.5 s of every step's start-up (kfnas/__init__.py).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    TF_USE_LEGACY_KERAS=1

WORKDIR /opt/kfnas
COPY images/constraints.txt images/constraints.txt
COPY pyproject.toml README.md ./
COPY src src
COPY components components
COPY pipelines pipelines
COPY schemas schemas
RUN python3 -m pip install -c images/constraints.txt . \
 && python3 -c 'import kfnas, tensorflow as tf; print("kfnas", kfnas.__version__, "tf", tf.__version__)'

# Run as a non-root user; the cluster profiles also set runAsNonRoot.
RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin kfnas
USER 1000:1000
WORKDIR /home/kfnas
