package catalogue

// WithGateway returns a Target like t but sending the gateway's requests to
// gatewayURL (another gateway in front of the same stack), with sign-ins of
// its own.
func (t *Target) WithGateway(gatewayURL string) *Target {
	return &Target{GatewayURL: gatewayURL, IssuerURL: t.IssuerURL, PDPURL: t.PDPURL, HTTP: t.HTTP, TOTP: t.TOTP, IssuerKey: t.IssuerKey}
}
