//go:build tools

// Package tools records the etcd command built from this module (see build.sh): the server
// module's own main package.
package tools

import _ "go.etcd.io/etcd/server/v3"
