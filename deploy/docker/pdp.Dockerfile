# The pdp image: a static binary built on the host by `make dist` (CGO off),
# the host's CA certificates, nothing else. No base image is pulled, so the
# build works offline and with the legacy builder. Build context: repo root.
FROM scratch
COPY dist/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY dist/pdp /usr/local/bin/pdp
# The policy bundle the PDP loads at start (GATEHOUSE_PDP_POLICY_DIR), without
# its Rego tests (.dockerignore).
COPY policies /policies
ENV GATEHOUSE_PDP_POLICY_DIR=/policies
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/pdp"]
