// Package pgtest runs integration tests against a real PostgreSQL server in
// Docker: one container per test binary, started from TestMain, and a fresh
// database per test.
//
//	var server *pgtest.Server
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &server)) }
//
//	func TestStore(t *testing.T) {
//		pool, err := postgres.Open(t.Context(), server.NewDatabase(t))
//		...
//	}
//
// The image comes from $GATEHOUSE_POSTGRES_IMAGE (default postgres:16);
// on hosts that cannot pull it, set it to the output of
// deploy/postgres/image.sh. Tests remove their container themselves, so they
// also work with the testcontainers reaper disabled
// (TESTCONTAINERS_RYUK_DISABLED=true); a killed test binary can leave one
// behind.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/testcontainers/testcontainers-go"

	"github.com/gatehouse/gatehouse/libs/postgres"
)

const (
	// ImageEnv names the environment variable that selects the image.
	ImageEnv = "GATEHOUSE_POSTGRES_IMAGE"
	// DefaultImage is the image used when ImageEnv is unset.
	DefaultImage = "postgres:16"
)

const (
	superuser     = "postgres"
	password      = "pgtest"
	containerPort = "5432/tcp"
	// startTimeout bounds container start plus server initialisation.
	startTimeout = 2 * time.Minute
	// cleanupTimeout bounds dropping a test's database.
	cleanupTimeout = 30 * time.Second
	// hostOverrideEnv is testcontainers' setting for where published ports are.
	hostOverrideEnv = "TESTCONTAINERS_HOST_OVERRIDE"
)

// Server is a PostgreSQL server running in a container for the tests of one
// package. Its methods are safe for concurrent use by parallel tests.
type Server struct {
	container *testcontainers.DockerContainer
	base      url.URL       // superuser DSN without a database
	admin     *pgxpool.Pool // superuser pool on the postgres database
}

// Start starts a PostgreSQL container and returns once the server answers
// SQL over its published port. The server trades durability for speed
// (fsync off, data on tmpfs): it is for tests only. Call Terminate when done.
func Start(ctx context.Context) (*Server, error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()

	image := os.Getenv(ImageEnv)
	if image == "" {
		image = DefaultImage
	}
	ctr, err := testcontainers.Run(ctx, image,
		testcontainers.WithExposedPorts(containerPort),
		testcontainers.WithEnv(map[string]string{
			"POSTGRES_USER":     superuser,
			"POSTGRES_PASSWORD": password,
		}),
		testcontainers.WithCmd("postgres",
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
		testcontainers.WithTmpfs(map[string]string{"/var/lib/postgresql/data": "rw"}),
	)
	if err != nil {
		if ctr != nil {
			_ = ctr.Terminate(context.WithoutCancel(ctx))
		}
		return nil, fmt.Errorf("pgtest: start container from image %q (set %s; deploy/postgres/image.sh prints a usable one): %w",
			image, ImageEnv, err)
	}
	s := &Server{container: ctr}
	if err := s.connect(ctx); err != nil {
		err = fmt.Errorf("pgtest: %s: %w%s", image, err, logTail(context.WithoutCancel(ctx), ctr))
		if terr := ctr.Terminate(context.WithoutCancel(ctx)); terr != nil {
			err = errors.Join(err, fmt.Errorf("pgtest: terminate container: %w", terr))
		}
		return nil, err
	}
	return s, nil
}

// connect waits until the server answers a SQL ping, then opens s.admin.
func (s *Server) connect(ctx context.Context) error {
	host, err := PublishedHost(ctx, s.container)
	if err != nil {
		return fmt.Errorf("find published host: %w", err)
	}
	port, err := s.container.MappedPort(ctx, containerPort)
	if err != nil {
		return fmt.Errorf("find published port: %w", err)
	}
	s.base = url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(superuser, password),
		Host:     net.JoinHostPort(host, port.Port()),
		RawQuery: "sslmode=disable",
	}
	dsn := s.dsn("postgres")
	for {
		state, err := s.container.State(ctx)
		if err != nil {
			return fmt.Errorf("inspect container: %w", err)
		}
		if !state.Running {
			return fmt.Errorf("container exited with status %d before the server was ready", state.ExitCode)
		}
		// A short wait per round, so that a container that dies is noticed.
		s.admin, err = postgres.Open(ctx, dsn, postgres.WithStartupWait(2*time.Second))
		if err == nil {
			return nil
		}
		if !errors.Is(err, postgres.ErrNotReady) || ctx.Err() != nil {
			return err
		}
	}
}

// NewDatabase creates an empty database for t, named after the test, and
// returns a superuser DSN for it. The database is dropped when t ends,
// after t's later-registered cleanups (such as closing a pool) have run.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name, err := databaseName(t.Name())
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := s.admin.Exec(t.Context(), "CREATE DATABASE "+ident); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if _, err := s.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return s.dsn(name)
}

// Terminate closes the server's connections and removes its container.
func (s *Server) Terminate(ctx context.Context) error {
	if s.admin != nil {
		s.admin.Close()
	}
	if err := s.container.Terminate(ctx); err != nil {
		return fmt.Errorf("pgtest: terminate container: %w", err)
	}
	return nil
}

// Main is TestMain for a package whose tests use a Server: it starts one,
// stores it in *srv, runs the tests, terminates it and returns the exit code
// for os.Exit. If the server cannot start, Main reports why and returns 1
// without running the tests: integration tests fail, never skip, when
// Docker or the image is missing.
func Main(m *testing.M, srv **Server) int {
	ctx := context.Background()
	s, err := Start(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	*srv = s
	code := m.Run()
	if err := s.Terminate(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return max(code, 1)
	}
	return code
}

func (s *Server) dsn(database string) string {
	u := s.base
	u.Path = "/" + database
	return u.String()
}

// databaseName derives a unique, valid database name from a test's name.
func databaseName(testName string) (string, error) {
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return "", fmt.Errorf("random database name: %w", err)
	}
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		if b.Len() >= 40 {
			break
		}
		if ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return "t_" + b.String() + "_" + hex.EncodeToString(suffix[:]), nil
}

// PublishedHost returns where ctr's published ports can be reached.
// testcontainers answers the Docker bridge gateway whenever /.dockerenv
// exists, which is wrong on a host whose Docker daemon runs in the same
// network namespace (a VM or sandbox built from a container image): there the
// gateway is one of our own addresses and the ports are on loopback.
// TESTCONTAINERS_HOST_OVERRIDE, when set, wins.
func PublishedHost(ctx context.Context, ctr *testcontainers.DockerContainer) (string, error) {
	if _, set := os.LookupEnv(hostOverrideEnv); !set {
		info, err := ctr.Inspect(ctx)
		if err != nil {
			return "", fmt.Errorf("inspect container: %w", err)
		}
		if info.NetworkSettings != nil {
			for _, ep := range info.NetworkSettings.Networks {
				if ep != nil && isLocalAddress(ep.Gateway) {
					return "127.0.0.1", nil
				}
			}
		}
	}
	host, err := ctr.Host(ctx)
	if err != nil {
		return "", fmt.Errorf("docker host: %w", err)
	}
	return host, nil
}

// isLocalAddress reports whether addr is assigned to one of this host's
// network interfaces.
func isLocalAddress(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if ipNet, ok := a.(*net.IPNet); ok {
			if local, ok := netip.AddrFromSlice(ipNet.IP); ok && local.Unmap() == addr.Unmap() {
				return true
			}
		}
	}
	return false
}

// logTail returns the end of ctr's log, to explain why a server did not start.
func logTail(ctx context.Context, ctr *testcontainers.DockerContainer) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rc, err := ctr.Logs(ctx)
	if err != nil {
		return ""
	}
	defer func() { _ = rc.Close() }()
	logs, err := io.ReadAll(rc)
	if err != nil || len(logs) == 0 {
		return ""
	}
	const maxTail = 4 << 10
	if len(logs) > maxTail {
		logs = logs[len(logs)-maxTail:]
	}
	return "\ncontainer log:\n" + string(logs)
}
