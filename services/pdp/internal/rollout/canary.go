package rollout

// FNV-1a 64-bit parameters (the same as hash/fnv's New64a), inlined so that
// InCanary hashes without allocating.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// InCanary reports whether the principal (tenant, subject) is in a canary
// share of percent: bucket < percent, where bucket is the FNV-1a 64 hash of
// tenant, a zero byte and subject, modulo 100. The choice depends on nothing
// else, so it is the same in every replica and after every restart, and a
// principal in a share stays in every larger share. percent <= 0 selects no
// one, percent >= 100 everyone.
func InCanary(tenant, subject string, percent int) bool {
	if percent <= 0 {
		return false
	}
	if percent >= 100 {
		return true
	}
	return canaryBucket(tenant, subject) < uint64(percent)
}

// canaryBucket is the principal's bucket in 0..99.
func canaryBucket(tenant, subject string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(tenant); i++ {
		h ^= uint64(tenant[i])
		h *= fnvPrime64
	}
	// The separator keeps ("ab", "c") and ("a", "bc") apart. XOR with 0
	// leaves h unchanged, so only the multiplication remains.
	h *= fnvPrime64
	for i := 0; i < len(subject); i++ {
		h ^= uint64(subject[i])
		h *= fnvPrime64
	}
	return h % 100
}
