# syntax=docker/dockerfile:1
# The base image, pinned to an exact release so a rebuild gets the same Python and Debian.
# Pin its digest too where the build host can reach the registry:
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm   # prints "Digest: sha256:..."
#   docker build --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:... .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
RUN groupadd --system smpp-gateway \
    && useradd --system --gid smpp-gateway --home-dir /var/lib/smpp-gateway smpp-gateway \
    && install -d -o smpp-gateway -g smpp-gateway -m 0750 /var/lib/smpp-gateway \
    && install -d -o root -g smpp-gateway -m 0750 /etc/smpp-gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# The container's config: listens on every interface of the container (config/docker.toml).
# Mount your own over it (or the directory /etc/smpp-gateway) to configure the gateway.
COPY --chown=root:smpp-gateway --chmod=0640 config/docker.toml /etc/smpp-gateway/gateway.toml
USER smpp-gateway
# State: the consent store, the audit trail and the privacy key (paths of config/docker.toml).
WORKDIR /var/lib/smpp-gateway
VOLUME ["/etc/smpp-gateway", "/var/lib/smpp-gateway"]
EXPOSE 2775 8775
# Liveness from the admin API's /healthz, with what the image has (Python, no curl). It is
# /healthz, not /readyz: an SMSC or store outage makes the gateway unready, not broken, and a
# restart would not mend it. Set SMPP_GATEWAY_HEALTH_URL where [admin] listen is another port.
ENV SMPP_GATEWAY_HEALTH_URL=http://127.0.0.1:8775/healthz
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['SMPP_GATEWAY_HEALTH_URL'], timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["smpp-gateway"]
CMD ["run", "--config", "/etc/smpp-gateway/gateway.toml"]
