package proto

import (
	"github.com/convergo/convergo/crdt"
)

// Exported is every constant of the protocol in one value, the source of
// crdt/testdata/protocol.json and jsclient/src/constants.js. Durations are
// in milliseconds.
type Exported struct {
	Version     int               `json:"version"`
	Paths       map[string]string `json:"paths"`
	Headers     map[string]string `json:"headers"`
	ContentType string            `json:"contentType"`
	Codes       []CodeInfo        `json:"codes"`
	Statuses    map[string]int    `json:"statuses"`
	ClientTypes []string          `json:"clientMessageTypes"`
	ServerTypes []string          `json:"serverMessageTypes"`
	Resets      []string          `json:"resetReasons"`
	Defaults    map[string]int64  `json:"defaults"`
	Timings     map[string]int64  `json:"timings"`
	Model       map[string]int64  `json:"model"`
	// Replica is the replica binding rule and sample prefixes, which the
	// JS client's own derivation is tested against.
	Replica struct {
		PrefixLen int               `json:"prefixLen"`
		Separator string            `json:"separator"`
		Domain    string            `json:"domain"`
		Samples   map[string]string `json:"samples"`
	} `json:"replica"`
}

// Constants returns the protocol's constants for export.
func Constants() Exported {
	statuses := map[string]int{}
	for _, s := range Statuses {
		statuses[s.String()] = int(s)
	}
	e := Exported{
		Version: Version,
		Paths: map[string]string{
			"prefix": PathPrefix, "legacyPrefix": LegacyPrefix,
			"hello": PathHello, "push": PathPush, "pull": PathPull, "live": PathLive, "restore": PathRestore,
		},
		Headers: map[string]string{
			"protocol": HeaderProtocol, "error": HeaderError,
			"requestId": HeaderRequestID, "retryAfter": HeaderRetryAfter,
		},
		ContentType: ContentType,
		Codes:       Codes,
		Statuses:    statuses,
		ClientTypes: clientTypes,
		ServerTypes: serverTypes,
		Resets:      ResetReasons,
		Defaults: map[string]int64{
			"maxBodyBytes":      DefaultMaxBodyBytes,
			"maxPushChanges":    DefaultMaxPushChanges,
			"maxPullRecords":    DefaultMaxPullRecords,
			"maxPageBytes":      DefaultMaxPageBytes,
			"maxMessageBytes":   DefaultMaxMessageBytes,
			"rate":              DefaultRate,
			"burst":             DefaultBurst,
			"maxConnsPerAddr":   DefaultMaxConnsPerAddr,
			"maxSubscriptions":  DefaultMaxSubscriptions,
			"maxDriftMs":        crdt.DefaultMaxDrift.Milliseconds(),
			"maxRequestIdBytes": MaxRequestIDBytes,
			"maxRejected":       MaxRejected,
			"maxRejectedBytes":  MaxRejectedBytes,
		},
		Timings: map[string]int64{
			"pingIntervalMs":         PingInterval.Milliseconds(),
			"idleTimeoutMs":          IdleTimeout.Milliseconds(),
			"clientSilenceTimeoutMs": ClientSilenceTimeout.Milliseconds(),
			"backoffInitialMs":       BackoffInitial.Milliseconds(),
			"backoffMaxMs":           BackoffMax.Milliseconds(),
		},
		Model: map[string]int64{
			"maxCollectionBytes":   MaxCollectionBytes,
			"maxIdBytes":           MaxIDBytes,
			"maxFieldNameBytes":    MaxFieldNameBytes,
			"maxReplicaBytes":      MaxReplicaBytes,
			"maxFieldsPerRecord":   MaxFieldsPerRecord,
			"maxValueBytes":        MaxValueBytes,
			"maxValueNestedLevels": MaxValueNestedLevels,
			"maxNestedLevels":      MaxNestedLevels,
			"maxContainerItems":    MaxContainerItems,
			"maxRecordBytes":       MaxRecordBytes,
			"maxWall":              MaxWall,
			"maxLogical":           MaxLogical,
			"maxIssuedLogical":     MaxIssuedLogical,
			"maxCursorBytes":       MaxCursorBytes,
		},
	}
	e.Replica.PrefixLen = ReplicaPrefixLen
	e.Replica.Separator = string(ReplicaSeparator)
	e.Replica.Domain = replicaDomain
	e.Replica.Samples = map[string]string{}
	for _, sub := range []string{"", "alice", "bob@example.com", "用户"} {
		e.Replica.Samples[sub] = ReplicaPrefix(sub)
	}
	return e
}
