// Package envflag lets every flag of a service also be set by an environment
// variable named GATEHOUSE_<SERVICE>_<FLAG>, as DESIGN.md promises.
package envflag

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Name returns the environment variable that sets flagName for service:
// Name("issuer", "http-addr") is "GATEHOUSE_ISSUER_HTTP_ADDR".
func Name(service, flagName string) string {
	r := strings.NewReplacer("-", "_", ".", "_")
	return "GATEHOUSE_" + strings.ToUpper(r.Replace(service)) + "_" + strings.ToUpper(r.Replace(flagName))
}

// Parse parses args into fs, then fills every flag not given on the command
// line from its environment variable (looked up with lookup, normally
// os.LookupEnv). Command-line flags win over the environment.
func Parse(fs *flag.FlagSet, service string, args []string, lookup func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []string
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := Name(service, f.Name)
		v, ok := lookup(env)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", env, err))
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("invalid environment: %s", strings.Join(errs, "; "))
	}
	return nil
}

// LookupEnv is os.LookupEnv, for callers of Parse.
func LookupEnv(key string) (string, bool) { return os.LookupEnv(key) }
