# One agentmesh service FROM scratch: its static binary, the system's
# certificate authorities (for https addresses of other services and of an
# OTLP collector), and the data directory, owned by the unprivileged user the
# service runs as. build.sh builds it once per service:
#   --build-arg SERVICE=registry --build-arg PORT=50051 -t agentmesh/registry:dev
# The service listens on every interface of the container; its health check
# asks it over grpc.health.v1 (`--health-check`), as a balancer would.
FROM scratch
ARG SERVICE
ARG PORT
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --chown=65532:65532 data /var/lib/agentmesh
COPY agentmesh-${SERVICE} /agentmesh
USER 65532:65532
ENV AGENTMESH_LISTEN=0.0.0.0:${PORT} \
    AGENTMESH_DATA_DIR=/var/lib/agentmesh
EXPOSE ${PORT}
HEALTHCHECK --interval=5s --timeout=4s --start-period=10s --retries=3 CMD ["/agentmesh", "--health-check"]
ENTRYPOINT ["/agentmesh"]
