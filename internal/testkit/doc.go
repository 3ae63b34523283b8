// Package testkit holds the scaffolding the tests of several packages
// share: a goroutine-safe buffer that can be waited on, building this
// module's commands once per test binary, child processes that report their
// listening address on a ready line (no port is closed and handed over), a
// loopback listener whose accept loop hands each connection to the test, a
// load loop that counts failures, and the quick-tier rule for heavy tests.
//
// It is imported by tests only.
package testkit
