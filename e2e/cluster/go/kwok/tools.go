//go:build tools

// Package tools records the commands this module builds, so that go.sum pins them.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
