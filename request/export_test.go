package request

// SetCoalesceJoined installs a hook that runs once a request has joined a
// coalesced flight, and returns a function that removes it.
func SetCoalesceJoined(f func(key string)) (restore func()) {
	coalesceJoined = f
	return func() { coalesceJoined = nil }
}
