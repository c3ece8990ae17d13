# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --system smpp-gateway \
    && useradd --system --gid smpp-gateway --home-dir /var/lib/smpp-gateway smpp-gateway \
    && install -d -o smpp-gateway -g smpp-gateway -m 0750 /var/lib/smpp-gateway /etc/smpp-gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config/gateway.toml /etc/smpp-gateway/gateway.toml
USER smpp-gateway
WORKDIR /var/lib/smpp-gateway
VOLUME ["/var/lib/smpp-gateway"]
EXPOSE 2775 8775
STOPSIGNAL SIGTERM
ENTRYPOINT ["smpp-gateway"]
CMD ["run", "--config", "/etc/smpp-gateway/gateway.toml"]
