package proto

import (
	"encoding/hex"

	"github.com/convergo/convergo/crdt"
)

// Exported is every constant of the protocol in one value, the source of
// crdt/testdata/protocol.json and jsclient/src/constants.js (and model.js).
// Durations are in milliseconds.
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
	// PushEnvelopeBytes is PushEnvelopeBytes.
	PushEnvelopeBytes int `json:"pushEnvelopeBytes"`
	// PushRooms are PushRoom of sample max-body values, which the JS
	// client's pushBudget is tested against.
	PushRooms []PushRoomVector `json:"pushRooms"`
	// BatchLens are BatchLen of sample sizes and limits, which the JS
	// client's batchLength is tested against.
	BatchLens []BatchLenVector `json:"batchLens"`
	// PushVersions are PushVersionBytes of sample collections and
	// versions, which the JS client's pushVersionBytes is tested against.
	PushVersions []PushVersionVector `json:"pushVersions"`
	// Replica is the replica binding rule and sample prefixes, which the
	// JS client's own derivation is tested against.
	Replica struct {
		PrefixLen int               `json:"prefixLen"`
		Separator string            `json:"separator"`
		Domain    string            `json:"domain"`
		Samples   map[string]string `json:"samples"`
	} `json:"replica"`
	// Scopes is what the protocol fixes about scopes: the reserved
	// collection prefix, the token claim, the leave entry's form.
	Scopes struct {
		ReservedPrefix string `json:"reservedPrefix"`
		DenyCollection string `json:"denyCollection"`
		Claim          string `json:"claim"`
		LeaveBytes     int    `json:"leaveBytes"`
		LeaveCost      int    `json:"leaveEntryCost"`
		LeaveDomain    string `json:"leaveDomain"`
		MaxBytes       int    `json:"maxBytes"`
		MaxDepth       int    `json:"maxDepth"`
		MaxNodes       int    `json:"maxNodes"`
		MaxList        int    `json:"maxList"`
	} `json:"scopes"`
	// Compact is the envelope keys of compact stamps (docs/protocol.md,
	// "Compact stamps") in every message that carries records, and the
	// push body's key naming its replica by its device part.
	Compact struct {
		TableKey  int `json:"tableKey"`
		BaseKey   int `json:"baseKey"`
		DeviceKey int `json:"deviceKey"`
	} `json:"compact"`
	// LeaveVectors are leave entries (LeaveDigest) of sample ids, which
	// the JS client's own digest is tested against.
	LeaveVectors []LeaveVector `json:"leaveVectors"`
}

// LeaveVector is the leave entry of one record id, in hex.
type LeaveVector struct {
	Collection string `json:"collection"`
	ID         string `json:"id"`
	Digest     string `json:"digest"`
}

// PushRoomVector is PushRoom of one max-body.
type PushRoomVector struct {
	MaxBody int64 `json:"maxBody"`
	Room    int64 `json:"room"`
}

// PushVersionVector is PushVersionBytes of one collection and version.
type PushVersionVector struct {
	Collection string `json:"collection"`
	Version    uint64 `json:"version"`
	Bytes      int    `json:"bytes"`
}

// BatchLenVector is BatchLen of items of these sizes under these limits.
type BatchLenVector struct {
	Sizes    []int `json:"sizes"`
	MaxCount int   `json:"maxCount"`
	MaxBytes int   `json:"maxBytes"`
	Len      int   `json:"len"`
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
			"prefix": PathPrefix, "legacyPrefix": LegacyPrefix, "versionPattern": VersionPathPattern,
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
			"maxHealAgain":      MaxHealAgain,
			"maxPullResets":     MaxPullResets,
			"pullShrink":        PullShrink,
			"maxRejectedBytes":  MaxRejectedBytes,
			"maxAnswerBytes":    DefaultMaxAnswerBytes,
			"maxTokenBytes":     MaxTokenBytes,
		},
		Timings: map[string]int64{
			"pingIntervalMs":         PingInterval.Milliseconds(),
			"idleTimeoutMs":          IdleTimeout.Milliseconds(),
			"clientSilenceTimeoutMs": ClientSilenceTimeout.Milliseconds(),
			"clientPushTimeoutMs":    ClientPushTimeout.Milliseconds(),
			"backoffInitialMs":       BackoffInitial.Milliseconds(),
			"backoffMaxMs":           BackoffMax.Milliseconds(),
			"maxRetryAfterMs":        MaxRetryAfter.Milliseconds(),
			"stableSessionMs":        StableSession.Milliseconds(),
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
	e.PushEnvelopeBytes = PushEnvelopeBytes
	for _, b := range []int64{0, 1, PushEnvelopeBytes - 1, PushEnvelopeBytes, PushEnvelopeBytes + 1, DefaultMaxBodyBytes} {
		e.PushRooms = append(e.PushRooms, PushRoomVector{MaxBody: b, Room: PushRoom(b)})
	}
	// Empty; exactly at the bytes, and one over; exactly at the count, and
	// one over; at both; an item larger than the bytes first, after
	// another, and alone; no room (a max-body at or under
	// PushEnvelopeBytes); a count under one.
	for _, v := range []BatchLenVector{
		{Sizes: []int{}, MaxCount: 5, MaxBytes: 100},
		{Sizes: []int{50, 50}, MaxCount: 5, MaxBytes: 100},
		{Sizes: []int{50, 51}, MaxCount: 5, MaxBytes: 100},
		{Sizes: []int{50, 50, 1}, MaxCount: 5, MaxBytes: 100},
		{Sizes: []int{1, 1, 1}, MaxCount: 3, MaxBytes: 100},
		{Sizes: []int{1, 1, 1, 1}, MaxCount: 3, MaxBytes: 100},
		{Sizes: []int{25, 25, 25, 25, 1}, MaxCount: 4, MaxBytes: 100},
		{Sizes: []int{500, 1}, MaxCount: 5, MaxBytes: 100},
		{Sizes: []int{1, 500, 1}, MaxCount: 5, MaxBytes: 100},
		{Sizes: []int{500}, MaxCount: 5, MaxBytes: 100},
		{Sizes: []int{1, 1, 1}, MaxCount: 5, MaxBytes: int(PushRoom(PushEnvelopeBytes))},
		{Sizes: []int{1, 1, 1}, MaxCount: 0, MaxBytes: 100},
	} {
		v.Len = BatchLen(v.Sizes, v.MaxCount, v.MaxBytes, func(n int) int { return n })
		e.BatchLens = append(e.BatchLens, v)
	}
	// Absent (version 0); each width of the name's head and of the
	// version; a name of multi-byte characters.
	for _, v := range []PushVersionVector{
		{Collection: "a", Version: 0}, {Collection: "a", Version: 1}, {Collection: "a", Version: 23},
		{Collection: "a", Version: 24}, {Collection: "abcdefghijklmnopqrstuvw", Version: 255},
		{Collection: "abcdefghijklmnopqrstuvwx", Version: 256}, {Collection: "notes", Version: 65535},
		{Collection: "notes", Version: 65536}, {Collection: "用户.笔记", Version: 1 << 32},
	} {
		v.Bytes = PushVersionBytes(v.Collection, v.Version)
		e.PushVersions = append(e.PushVersions, v)
	}
	e.Replica.PrefixLen = ReplicaPrefixLen
	e.Replica.Separator = string(ReplicaSeparator)
	e.Replica.Domain = replicaDomain
	e.Replica.Samples = map[string]string{}
	for _, sub := range []string{"", "alice", "bob@example.com", "用户"} {
		e.Replica.Samples[sub] = ReplicaPrefix(sub)
	}
	e.Scopes.ReservedPrefix = ReservedPrefix
	e.Scopes.DenyCollection = DenyCollection
	e.Scopes.Claim = ClaimScopes
	e.Scopes.LeaveBytes = LeaveBytes
	e.Scopes.LeaveCost = LeaveEntryCost
	e.Scopes.LeaveDomain = leaveDomain
	e.Scopes.MaxBytes = MaxScopeBytes
	e.Scopes.MaxDepth = MaxScopeDepth
	e.Scopes.MaxNodes = MaxScopeNodes
	e.Scopes.MaxList = MaxScopeList
	e.Compact.TableKey = KeyReplicaTable
	e.Compact.BaseKey = KeyBaseWall
	e.Compact.DeviceKey = KeyPushDevice
	for _, v := range [][2]string{
		{"demo.todos", "t1"}, {"notes", "n1"}, {"tenant42.notes", "用户/笔记"}, {"a", "x y"},
	} {
		e.LeaveVectors = append(e.LeaveVectors, LeaveVector{v[0], v[1], hex.EncodeToString(LeaveDigest(v[0], v[1]))})
	}
	return e
}
