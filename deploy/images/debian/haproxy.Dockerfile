# HAProxy from Debian's packages, run the way the official haproxy image is:
# `haproxy -f <config>` as an unprivileged user, logs on stdout.
FROM agentmesh/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/*
USER haproxy
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
