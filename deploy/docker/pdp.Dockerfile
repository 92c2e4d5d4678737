# The pdp image: a static binary built on the host by `make dist` (CGO off),
# the host's CA certificates, nothing else. No base image is pulled, so the
# build works offline and with the legacy builder. Build context: repo root.
FROM scratch
COPY dist/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY dist/pdp /usr/local/bin/pdp
# The signed policy bundle the PDP starts with (GATEHOUSE_PDP_POLICY_DIR),
# without its Rego tests and test data (.dockerignore).
COPY policies /policies
ENV GATEHOUSE_PDP_POLICY_DIR=/policies
# The demo bundle verification key. It is not configured here: a deployment
# names its own key (GATEHOUSE_PDP_BUNDLE_VERIFICATION_KEY and _KEY_ID);
# compose and the e2e stack opt in to this one explicitly.
COPY deploy/policy-signing/demo.pub.pem /policy-signing/demo.pub.pem
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/pdp"]
