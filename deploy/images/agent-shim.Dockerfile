# The agent shim alone. Wrap another agent with
#   COPY --from=agentmesh/agent-shim:dev /agentmesh-agent-shim /
#   ENTRYPOINT ["/agentmesh-agent-shim", "--", "/your-agent"]
FROM scratch
COPY agentmesh-agent-shim /
ENTRYPOINT ["/agentmesh-agent-shim", "--"]
