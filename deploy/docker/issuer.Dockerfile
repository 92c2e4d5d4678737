# The issuer image: a static binary built on the host by `make dist` (CGO off),
# the host's CA certificates, nothing else. No base image is pulled, so the
# build works offline and with the legacy builder. Build context: repo root.
FROM scratch
COPY dist/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY dist/issuer /usr/local/bin/issuer
# The scope catalog the consent page explains scopes from
# (GATEHOUSE_ISSUER_SCOPE_CATALOG).
COPY policies/gatehouse/data.json /policies/gatehouse/data.json
ENV GATEHOUSE_ISSUER_SCOPE_CATALOG=/policies/gatehouse/data.json
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/issuer"]
