# The support image: a static binary built on the host by `make dist` (CGO off),
# the host's CA certificates, nothing else. No base image is pulled, so the
# build works offline and with the legacy builder. Build context: repo root.
FROM scratch
COPY dist/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY dist/support /usr/local/bin/support
USER 65532:65532
EXPOSE 8092
ENTRYPOINT ["/usr/local/bin/support"]
