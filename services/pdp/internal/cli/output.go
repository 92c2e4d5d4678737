package cli

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// table collects rows of tab-separated cells and writes them aligned.
type table struct {
	buf bytes.Buffer // tabwriter over a buffer cannot fail; the real writer can
	tw  *tabwriter.Writer
}

func newTable() *table {
	t := &table{}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', 0)
	return t
}

// row adds one row; empty cells print as "-".
func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	_, _ = fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// writeTo flushes the table to w.
func (t *table) writeTo(w io.Writer) error {
	_ = t.tw.Flush()
	if _, err := w.Write(t.buf.Bytes()); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// printf writes a line of results to stdout.
func (c *cli) printf(format string, args ...any) error {
	if _, err := fmt.Fprintf(c.stdout, format, args...); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// progress writes a progress line to stderr.
func (c *cli) progress(format string, args ...any) {
	_, _ = fmt.Fprintf(c.stderr, format+"\n", args...)
}

// formatTime prints t in UTC, RFC 3339; "" (shown as "-") when unset.
func formatTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}
