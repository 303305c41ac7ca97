package node

// MaxIdleRunners exposes the bound on parked runner goroutines to tests.
var MaxIdleRunners = maxIdleRunners
