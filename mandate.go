// Package mandate holds what every layer shares: the coded errors that are
// safe to show an agent, money in integer minor units, and the default model
// and policy that are embedded so an installed binary works outside the repo.
//
// A tools/call flows cmd/mandate → tools (what agents see) → policy (what is
// allowed) → storage (what happened) → backend (the systems of record).
package mandate

import _ "embed"

// DefaultModel is the shipped Casbin model (model.conf at the repo root).
//
//go:embed model.conf
var DefaultModel []byte

// DefaultPolicy is the shipped policy (policy.csv at the repo root).
//
//go:embed policy.csv
var DefaultPolicy []byte

// DefaultRates is the shipped exchange-rate file (rates.csv at the repo
// root): the base currency that money limits are written in, and a rate for
// every other currency. See package rates.
//
//go:embed rates.csv
var DefaultRates []byte
