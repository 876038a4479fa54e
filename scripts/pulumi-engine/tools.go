//go:build tools

// Package engine pins the Pulumi engine binaries that scripts/pulumi-engine.sh builds.
package engine

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
)
