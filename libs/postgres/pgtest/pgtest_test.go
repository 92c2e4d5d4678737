package pgtest

import (
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
)

var server *Server

func TestMain(m *testing.M) { os.Exit(Main(m, &server)) }

func TestNewDatabase(t *testing.T) {
	var name string
	t.Run("owner", func(t *testing.T) {
		dsn := server.NewDatabase(t)
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("NewDatabase returned %q: %v", dsn, err)
		}
		name = strings.TrimPrefix(u.Path, "/")
		if !databaseExists(t, name) {
			t.Fatalf("database %q was not created", name)
		}
	})
	if databaseExists(t, name) {
		t.Errorf("database %q still exists after its test ended", name)
	}
}

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	var exists bool
	err := server.admin.QueryRow(t.Context(),
		"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	if err != nil {
		t.Fatalf("look up database %q: %v", name, err)
	}
	return exists
}

func TestDatabaseName(t *testing.T) {
	t.Parallel()
	valid := regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	tests := []struct {
		name     string
		testName string
	}{
		{name: "simple", testName: "TestStore"},
		{name: "subtest", testName: "TestStore/Get missing key#01"},
		{name: "long", testName: strings.Repeat("TestAVeryLongName/", 10)},
		{name: "non-ASCII", testName: "TestÜnïcode/名前"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, errA := databaseName(tc.testName)
			b, errB := databaseName(tc.testName)
			if errA != nil || errB != nil {
				t.Fatalf("databaseName: %v, %v", errA, errB)
			}
			if !valid.MatchString(a) {
				t.Errorf("databaseName(%q) = %q, not a plain identifier of at most 63 bytes", tc.testName, a)
			}
			if a == b {
				t.Errorf("databaseName(%q) returned %q twice", tc.testName, a)
			}
		})
	}
}
