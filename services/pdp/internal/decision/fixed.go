package decision

import "go.opentelemetry.io/otel/metric"
import metricnoop "go.opentelemetry.io/otel/metric/noop"

// Fixed is a Router that always selects one evaluator: no rollout. Tests
// and tools that decide with one bundle use it.
type Fixed struct{ Evaluator Evaluator }

// Select implements Router.
func (f Fixed) Select(Principal) Selection { return Selection{Decider: f.Evaluator} }

func metricNoop() metric.Meter { return metricnoop.NewMeterProvider().Meter("") }
