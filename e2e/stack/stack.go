// Package stack starts Gatehouse as containers for end-to-end tests:
// Postgres and every service on a private Docker network, from the images
// `make images` builds. It is the only place in the repository that starts
// containers, and it removes every one it started (the testcontainers reaper
// cannot be pulled here, so cleanup is ours).
package stack

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pquerna/otp/totp"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/gatehouse/gatehouse/libs/postgres/pgtest"
)

// IssuerID is the issuer identifier inside the stack: the issuer's network
// alias, so the services' configured identifier and the tokens' iss agree.
const IssuerID = "http://issuer:8080"

const dbPassword = "e2e-db-password"

// Stack is a running Gatehouse.
type Stack struct {
	network    *testcontainers.DockerNetwork
	containers map[string]*testcontainers.DockerContainer
	ports      map[string]string
	// order is the start order, for logs.
	order []string
	// terminated is set when Terminate begins: no container starts again
	// after that, even if a test is still running (interrupt).
	terminated atomic.Bool

	// totpMu guards totpSteps: the last TOTP step handed out per secret.
	totpMu    sync.Mutex
	totpSteps map[string]int64

	// kek is the issuer's key-encryption key (see IssuerSigningKey).
	kek []byte

	// IssuerURL and GatewayURL are reachable from the host.
	IssuerURL  string
	GatewayURL string
}

// Option changes the stack a package starts (Start, Main).
type Option func(*options)

type options struct {
	// env holds, by service name, variables set over the service's own.
	env map[string]map[string]string
}

// WithEnv sets environment variables of one service's container (by its
// name in the stack, such as "issuer" or "gateway") on top of, or in place
// of, the ones the stack sets: for a package that needs the services configured
// differently, such as shorter key rotation timings. Several WithEnv for the
// same service add up; a later one wins for the same variable.
func WithEnv(service string, env map[string]string) Option {
	return func(o *options) {
		if o.env == nil {
			o.env = map[string]map[string]string{}
		}
		if o.env[service] == nil {
			o.env[service] = map[string]string{}
		}
		maps.Copy(o.env[service], env)
	}
}

// Start brings the stack up. Images: gatehouse/<service>:<GATEHOUSE_IMAGE_TAG
// or "local">, Postgres from GATEHOUSE_POSTGRES_IMAGE. On error everything
// started so far is removed.
//
// The stack removes its own containers, so it needs no testcontainers reaper,
// whose image would have to be pulled: unless TESTCONTAINERS_RYUK_DISABLED is
// set, Start sets it to true before testcontainers reads its configuration.
//
// Options change the stack for one package, such as WithEnv.
func Start(ctx context.Context, opts ...Option) (s *Stack, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if _, set := os.LookupEnv("TESTCONTAINERS_RYUK_DISABLED"); !set {
		if err := os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true"); err != nil {
			return nil, err
		}
	}
	tag := envOr("GATEHOUSE_IMAGE_TAG", "local")
	pgImage := envOr("GATEHOUSE_POSTGRES_IMAGE", "postgres:16")
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	nw, err := network.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("create network: %w", err)
	}
	s = &Stack{
		network:    nw,
		containers: map[string]*testcontainers.DockerContainer{},
		ports:      map[string]string{},
		totpSteps:  map[string]int64{},
		kek:        make([]byte, kekSize),
	}
	_, _ = rand.Read(s.kek)
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Terminate(context.WithoutCancel(ctx)))
			s = nil
		}
	}()

	dsn := func(db string) string {
		return fmt.Sprintf("postgres://postgres:%s@postgres:5432/%s?sslmode=disable", dbPassword, db)
	}
	specs := []struct {
		name  string
		image string
		port  string
		env   map[string]string
		opts  []testcontainers.ContainerCustomizer
	}{
		{name: "postgres", image: pgImage, port: "5432/tcp", env: map[string]string{
			"POSTGRES_PASSWORD": dbPassword,
			// Test data need not survive a crash, only a clean stop: skip
			// the fsyncs, which are most of the start-up time.
			"POSTGRES_INITDB_ARGS": "--no-sync",
		}, opts: []testcontainers.ContainerCustomizer{
			testcontainers.WithCmd("postgres", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
			testcontainers.WithFiles(testcontainers.ContainerFile{
				HostFilePath:      filepath.Join(root, "deploy/postgres/initdb/01-databases.sql"),
				ContainerFilePath: "/docker-entrypoint-initdb.d/01-databases.sql",
				FileMode:          0o644,
			}),
			testcontainers.WithWaitStrategyAndDeadline(2*time.Minute,
				wait.ForExec([]string{"pg_isready", "-h", "127.0.0.1", "-U", "postgres"}).WithPollInterval(200*time.Millisecond),
				wait.ForExec([]string{"psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "invoice", "-c", "select 1"}).
					WithPollInterval(200*time.Millisecond)),
			testcontainers.WithEnv(map[string]string{"PGPASSWORD": dbPassword}),
		}},
		{name: "issuer", image: "gatehouse/issuer:" + tag, port: "8080/tcp", env: map[string]string{
			"GATEHOUSE_ISSUER_DEMO":         "true",
			"GATEHOUSE_ISSUER_ISSUER":       IssuerID,
			"GATEHOUSE_ISSUER_DATABASE_URL": dsn("issuer"),
			"GATEHOUSE_ISSUER_PDP_URL":      "http://pdp:8081",
			// A key-encryption key of the stack's own, as in production
			// (the demo would make up one), so that the attack suite can
			// sign with the issuer's real key (IssuerSigningKey).
			"GATEHOUSE_ISSUER_KEY_ENCRYPTION_KEY_FILE": kekPath,
		}, opts: []testcontainers.ContainerCustomizer{
			testcontainers.WithFiles(testcontainers.ContainerFile{
				Reader: bytes.NewReader(s.kek), ContainerFilePath: kekPath, FileMode: 0o444,
			}),
		}},
		{name: "pdp", image: "gatehouse/pdp:" + tag, port: "8081/tcp", env: pdpEnv(dsn("pdp"))},
		// A second PDP replica on the same database: rollouts must reach
		// every replica. Only the tests call it; services use "pdp".
		{name: "pdp2", image: "gatehouse/pdp:" + tag, port: "8081/tcp", env: pdpEnv(dsn("pdp"))},
		{name: "invoice", image: "gatehouse/invoice:" + tag, port: "8091/tcp", env: map[string]string{
			"GATEHOUSE_INVOICE_DEMO":         "true",
			"GATEHOUSE_INVOICE_DATABASE_URL": dsn("invoice"),
			"GATEHOUSE_INVOICE_ISSUER":       IssuerID,
			"GATEHOUSE_INVOICE_PDP_URL":      "http://pdp:8081",
		}},
		{name: "support", image: "gatehouse/support:" + tag, port: "8092/tcp", env: map[string]string{
			"GATEHOUSE_SUPPORT_DEMO":         "true",
			"GATEHOUSE_SUPPORT_DATABASE_URL": dsn("support"),
			"GATEHOUSE_SUPPORT_ISSUER":       IssuerID,
			"GATEHOUSE_SUPPORT_PDP_URL":      "http://pdp:8081",
			"GATEHOUSE_SUPPORT_INVOICE_URL":  "http://invoice:8091",
		}},
		{name: "gateway", image: "gatehouse/gateway:" + tag, port: "8000/tcp", env: map[string]string{
			"GATEHOUSE_GATEWAY_ISSUER":                   IssuerID,
			"GATEHOUSE_GATEWAY_PDP_URL":                  "http://pdp:8081",
			"GATEHOUSE_GATEWAY_INVOICE_URL":              "http://invoice:8091",
			"GATEHOUSE_GATEWAY_SUPPORT_URL":              "http://support:8092",
			"GATEHOUSE_GATEWAY_REVOCATION_CLIENT_SECRET": "gateway-secret",
		}},
	}
	// A package's WithEnv goes over the defaults above; a service name that
	// is not in the stack is an error, not silently ignored.
	for i := range specs {
		maps.Copy(specs[i].env, o.env[specs[i].name])
		delete(o.env, specs[i].name)
	}
	if len(o.env) > 0 {
		return s, fmt.Errorf("stack: WithEnv for %s: no such service", strings.Join(slices.Sorted(maps.Keys(o.env)), ", "))
	}
	for _, spec := range specs {
		opts := []testcontainers.ContainerCustomizer{
			testcontainers.WithExposedPorts(spec.port),
			testcontainers.WithEnv(spec.env),
			network.WithNetwork([]string{spec.name}, nw),
			testcontainers.WithName(fmt.Sprintf("gatehouse-e2e-%s-%d", spec.name, time.Now().UnixNano())),
		}
		opts = append(opts, spec.opts...)
		c, err := testcontainers.Run(ctx, spec.image, opts...)
		if c != nil {
			s.containers[spec.name] = c
			s.order = append(s.order, spec.name)
		}
		if err != nil {
			return s, fmt.Errorf("start %s (%s): %w", spec.name, spec.image, err)
		}
		s.ports[spec.name] = spec.port
		if spec.name != "postgres" {
			if err := s.WaitReady(ctx, spec.name); err != nil {
				return s, err
			}
		}
	}
	if s.IssuerURL, err = s.endpoint(ctx, "issuer"); err != nil {
		return s, err
	}
	if s.GatewayURL, err = s.endpoint(ctx, "gateway"); err != nil {
		return s, err
	}
	return s, nil
}

// pdpEnv configures a PDP replica: the shared database, the demo bundle
// verification key baked into the image, and the issuer for admin tokens.
func pdpEnv(dsn string) map[string]string {
	return map[string]string{
		"GATEHOUSE_PDP_DATABASE_URL":               dsn,
		"GATEHOUSE_PDP_BUNDLE_VERIFICATION_KEY":    "/policy-signing/demo.pub.pem",
		"GATEHOUSE_PDP_BUNDLE_VERIFICATION_KEY_ID": "gatehouse-demo",
		"GATEHOUSE_PDP_ISSUER":                     IssuerID,
	}
}

// container returns the container of a service of the stack.
func (s *Stack) container(name string) (*testcontainers.DockerContainer, error) {
	c, ok := s.containers[name]
	if !ok {
		return nil, fmt.Errorf("no service %q in the stack", name)
	}
	return c, nil
}

// endpoint is the http:// base URL of a service's published port.
func (s *Stack) endpoint(ctx context.Context, name string) (string, error) {
	c := s.containers[name]
	host, err := pgtest.PublishedHost(ctx, c)
	if err != nil {
		return "", fmt.Errorf("%s host: %w", name, err)
	}
	port, err := c.MappedPort(ctx, s.ports[name])
	if err != nil {
		return "", fmt.Errorf("%s port: %w", name, err)
	}
	return "http://" + net.JoinHostPort(host, port.Port()), nil
}

// URL is the http:// base URL, reachable from the host, of one of the
// stack's services (its published port), e.g. URL(ctx, "pdp2").
func (s *Stack) URL(ctx context.Context, name string) (string, error) {
	if _, err := s.container(name); err != nil {
		return "", err
	}
	return s.endpoint(ctx, name)
}

// DatabaseURL is a DSN for one of the stack's databases (issuer, pdp,
// invoice, support), reachable from the host: for tools such as
// `gatehouse audit verify`.
func (s *Stack) DatabaseURL(ctx context.Context, db string) (string, error) {
	base, err := s.endpoint(ctx, "postgres")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("postgres://postgres:%s@%s/%s?sslmode=disable", dbPassword, strings.TrimPrefix(base, "http://"), db), nil
}

// HTTPClient returns a client for the host that reaches the stack's services
// by the addresses the containers use: a request for http://issuer:8080
// (IssuerID) is dialled to the issuer's published port, so the URLs the
// issuer advertises (discovery, JWKS, token endpoint) work from the tests
// unchanged, with the Host header the issuer sees from inside the stack. The
// published port is looked up at each dial, so it stays right across a
// container's restart. Any other address is dialled as it is, never through
// a proxy. Each call returns a new client, free to get a cookie jar or a
// redirect policy.
func (s *Stack) HTTPClient() *http.Client {
	var dialer net.Dialer
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if published, ok, err := s.publishedAddr(ctx, addr); ok {
			if err != nil {
				return nil, err
			}
			addr = published
		}
		return dialer.DialContext(ctx, network, addr)
	}
	return &http.Client{Transport: transport, Timeout: 30 * time.Second}
}

// publishedAddr maps a service's address inside the stack ("issuer:8080")
// to its published host:port; ok is false for any other address.
func (s *Stack) publishedAddr(ctx context.Context, addr string) (published string, ok bool, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || s.ports[host] != port+"/tcp" {
		return "", false, nil
	}
	base, err := s.endpoint(ctx, host)
	if err != nil {
		return "", true, err
	}
	return strings.TrimPrefix(base, "http://"), true, nil
}

// TOTPCode returns the code an authenticator app shows now for secret (a
// demo user's base32 TOTP secret), for a login at the stack's issuer. The
// issuer accepts each time step of a user's codes once (RFC 6238 section
// 5.2), so when a test of this stack already took the current step, TOTPCode
// waits for the next one (up to 30 seconds, bounded by ctx). It never hands
// out a step twice; callers waiting on the same secret queue in turn.
func (s *Stack) TOTPCode(ctx context.Context, secret string) (string, error) {
	const period = 30 // seconds: the RFC 6238 default that the issuer uses
	s.totpMu.Lock()
	defer s.totpMu.Unlock()
	for {
		now := time.Now()
		step := now.Unix() / period
		if step > s.totpSteps[secret] {
			code, err := totp.GenerateCode(secret, now)
			if err != nil {
				return "", fmt.Errorf("totp: %w", err)
			}
			s.totpSteps[secret] = step
			return code, nil
		}
		next := time.Unix((s.totpSteps[secret]+1)*period, 0)
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for a fresh TOTP step: %w", ctx.Err())
		case <-time.After(time.Until(next)):
		}
	}
}

// WaitReady polls a service's /readyz until it answers 200 (a minute at most).
func (s *Stack) WaitReady(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		base, err := s.endpoint(ctx, name)
		if err == nil {
			var req *http.Request
			if req, err = http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil); err == nil {
				var resp *http.Response
				if resp, err = client.Do(req); err == nil {
					_ = resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						return nil
					}
					err = fmt.Errorf("readyz: %s", resp.Status)
				}
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", name, errors.Join(last, ctx.Err()))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop stops one container (its state is kept) and waits until it exited.
func (s *Stack) Stop(ctx context.Context, name string) error {
	c, err := s.container(name)
	if err != nil {
		return err
	}
	timeout := 5 * time.Second
	return c.Stop(ctx, &timeout)
}

// StartContainer starts a stopped container again without waiting for the
// service to be ready, so a test can start services out of order. Postgres
// alone is waited for: it returns once Postgres answers SQL.
func (s *Stack) StartContainer(ctx context.Context, name string) error {
	c, err := s.container(name)
	if err != nil {
		return err
	}
	if s.terminated.Load() {
		return fmt.Errorf("start %s: the stack is being removed", name)
	}
	if err := c.Start(ctx); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	return nil
}

// StartService starts a stopped service again and waits until it is ready.
func (s *Stack) StartService(ctx context.Context, name string) error {
	if err := s.StartContainer(ctx, name); err != nil {
		return err
	}
	if name == "postgres" {
		return nil
	}
	return s.WaitReady(ctx, name)
}

// ServiceLogs returns one container's output so far, across its restarts.
func (s *Stack) ServiceLogs(ctx context.Context, name string) ([]byte, error) {
	c, err := s.container(name)
	if err != nil {
		return nil, err
	}
	rc, err := c.Logs(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s logs: %w", name, err)
	}
	var buf bytes.Buffer
	_, err = io.Copy(&buf, rc)
	if err = errors.Join(err, rc.Close()); err != nil {
		return nil, fmt.Errorf("%s logs: %w", name, err)
	}
	return buf.Bytes(), nil
}

// Logs returns every container's output, by service name.
func (s *Stack) Logs(ctx context.Context) (map[string][]byte, error) {
	out := map[string][]byte{}
	var errs []error
	for _, name := range s.order {
		b, err := s.ServiceLogs(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[name] = b
	}
	return out, errors.Join(errs...)
}

// Terminate removes every container, all at once, then the network.
func (s *Stack) Terminate(ctx context.Context) error {
	s.terminated.Store(true)
	errs := make([]error, len(s.order)+1)
	var wg sync.WaitGroup
	for i, name := range s.order {
		wg.Go(func() { errs[i] = s.containers[name].Terminate(ctx) })
	}
	wg.Wait()
	if s.network != nil {
		errs[len(s.order)] = s.network.Remove(ctx)
	}
	return errors.Join(errs...)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// repoRoot finds the repository root from this file's location.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the repository root")
	}
	return filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
}
