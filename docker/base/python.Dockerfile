# A Python image made locally, for machines that reach no image registry: Debian's python3 with its
# headers and a virtualenv on PATH, on top of a Debian image imported from mmdebstrap
# (tools/docker_engine.py makes both). Passed to docker/Dockerfile as PYTHON_IMAGE.
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-dev python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/python
ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
