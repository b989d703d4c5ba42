# The echo agent behind the agent shim. Arguments given to the container
# (a workspace spec's args) go to the echo agent; the shim reads AGENTMESH_*.
FROM scratch
COPY agentmesh-agent-shim agentmesh-echo-agent /
EXPOSE 8080
ENTRYPOINT ["/agentmesh-agent-shim", "--", "/agentmesh-echo-agent"]
