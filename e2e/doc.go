// Package e2e holds Spillway's end-to-end tests and the tools they start: the local fleet
// (localfleet, cmd/fleet) and the model-server simulator command (cmd/modelsim). The tests start
// real processes from the binaries `make build` puts in bin/ and assert what an operator sees.
// Every run speaks TLS as production does: the local fleet and the test hubs make their own CA
// and certificates, and trust_test.go is the hostile-spoke suite of docs/security.md.
package e2e
