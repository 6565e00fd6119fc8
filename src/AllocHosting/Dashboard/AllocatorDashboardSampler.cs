using System.Diagnostics.Metrics;
using System.Text.Json;
using AllocHosting.Allocators.MemorySources;
using Microsoft.Extensions.Options;

namespace AllocHosting;

/// <summary>
/// Feeds the allocator dashboard from the app's own <c>AllocHosting</c> meter through an in-process
/// <see cref="MeterListener"/>: it keeps running totals of the recorded instruments and collects
/// the observable ones when a snapshot is written. Started by <c>MapAllocatorDashboard</c> only,
/// so an app that does not map the page has no listener enabling its instruments.
/// </summary>
/// <remarks>
/// Only the meter created by this app's <see cref="IMeterFactory"/> is read (its
/// <see cref="Meter.Scope"/>), so several hosts in one process each see their own figures.
/// Snapshots hold cumulative figures; the page derives rates and per-interval percentiles from
/// two of them, so any number of pages can poll without sharing state here.
/// </remarks>
internal sealed class AllocatorDashboardSampler : IDisposable
{
    private readonly IMeterFactory _meterFactory;
    private readonly SwitchableAllocatorOptions _options;
    private readonly MeterListener _listener;
    private readonly Lock _startLock = new();
    private readonly Lock _collectLock = new();

    // Recorded instruments: updated by request threads, read without the collect lock.
    // The usage histogram's counts over AllocHostingMetrics.UsedBoundaries (the instrument's own
    // advice: the meter is always the one AllocHostingMetrics creates), plus the +Inf bucket.
    private readonly long[] _usedBuckets = new long[AllocHostingMetrics.UsedBoundaries.Length + 1];
    private long _usedCount;
    private long _usedSum;
    private long _overflowed;
    private long _rejected;
    private readonly Dictionary<string, long> _failures = new(StringComparer.Ordinal);

    // Observable instruments: written by the listener while a snapshot collects them, under _collectLock.
    private long _rents;
    private long _active;
    private readonly SortedDictionary<string, long> _allocated = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, long> _live = new(StringComparer.Ordinal);
    private readonly SortedDictionary<long, long> _mapped = [];

    private bool _started;
    private bool _disposed;

    public AllocatorDashboardSampler(IMeterFactory meterFactory, IOptions<SwitchableAllocatorOptions> options, RequestArenaPool pool)
    {
        _meterFactory = meterFactory;
        _options = options.Value;
        // Resolving the pool is what creates the observable instruments; the listener sees them now or when published.
        ArgumentNullException.ThrowIfNull(pool);
        _listener = new MeterListener { InstrumentPublished = OnInstrumentPublished };
        _listener.SetMeasurementEventCallback<long>(OnMeasurement);
    }

    /// <summary>Starts listening (once; later calls do nothing).</summary>
    public void Start()
    {
        lock (_startLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_started)
            {
                _listener.Start();
                _started = true;
            }
        }
    }

    /// <summary>Writes the current cumulative figures as one JSON object (the format is described in docs/dashboards.md).</summary>
    public void WriteSnapshot(Utf8JsonWriter writer, DateTimeOffset now)
    {
        lock (_collectLock)
        {
            _rents = 0;
            _active = 0;
            _allocated.Clear();
            _live.Clear();
            _mapped.Clear();
            _listener.RecordObservableInstruments();

            writer.WriteStartObject();
            writer.WriteNumber("timestamp", now.ToUnixTimeMilliseconds());

            writer.WriteStartObject("arena");
            writer.WriteString("kind", AllocHostingMetrics.ArenaKindName(_options.ArenaKind));
            writer.WriteNumber("chunkSize", _options.InitialArenaSize);
            writer.WriteNumber("maxPerRequest", _options.MaxArenaSizePerRequest);
            writer.WriteNumber("budget", _options.MemoryBudget);
            writer.WriteEndObject();

            writer.WriteNumber("rents", _rents);
            writer.WriteNumber("active", _active);
            writer.WriteNumber("overflowed", Interlocked.Read(ref _overflowed));
            writer.WriteNumber("rejected", Interlocked.Read(ref _rejected));

            writer.WriteStartObject("failures");
            lock (_failures)
            {
                foreach (var (errorType, count) in _failures)
                {
                    writer.WriteNumber(errorType, count);
                }
            }

            writer.WriteEndObject();

            long[] boundaries = AllocHostingMetrics.UsedBoundaries, buckets = _usedBuckets;
            writer.WriteStartObject("used");
            writer.WriteNumber("count", Interlocked.Read(ref _usedCount));
            writer.WriteNumber("sum", Interlocked.Read(ref _usedSum));
            writer.WriteStartArray("boundaries");
            foreach (long boundary in boundaries)
            {
                writer.WriteNumberValue(boundary);
            }

            writer.WriteEndArray();
            writer.WriteStartArray("buckets");
            for (int i = 0; i < buckets.Length; i++)
            {
                writer.WriteNumberValue(Interlocked.Read(ref buckets[i]));
            }

            writer.WriteEndArray();
            writer.WriteEndObject();

            WriteByAllocator(writer, "allocated", _allocated);
            WriteByAllocator(writer, "live", _live);

            writer.WriteStartObject("numa");
            writer.WriteNumber("nodes", NumaTopology.Current.NodeCount);
            writer.WriteStartArray("mapped");
            foreach (var (node, bytes) in _mapped)
            {
                writer.WriteStartObject();
                writer.WriteNumber("node", node);
                writer.WriteNumber("bytes", bytes);
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
            writer.WriteEndObject();

            writer.WriteStartObject("gc");
            writer.WriteNumber("gen0", GC.CollectionCount(0));
            writer.WriteNumber("gen1", GC.CollectionCount(1));
            writer.WriteNumber("gen2", GC.CollectionCount(2));
            writer.WriteEndObject();

            writer.WriteEndObject();
        }
    }

    public void Dispose()
    {
        lock (_startLock)
        {
            _disposed = true;
            _listener.Dispose();
        }
    }

    private static void WriteByAllocator(Utf8JsonWriter writer, string name, SortedDictionary<string, long> values)
    {
        writer.WriteStartObject(name);
        foreach (var (allocator, bytes) in values)
        {
            writer.WriteNumber(allocator, bytes);
        }

        writer.WriteEndObject();
    }

    private void OnInstrumentPublished(Instrument instrument, MeterListener listener)
    {
        if (instrument.Meter.Name != AllocHostingMetrics.MeterName || !ReferenceEquals(instrument.Meter.Scope, _meterFactory))
        {
            return;
        }

        // The instrument's kind travels as the measurement state: no string comparison per measurement.
        Measured? kind = instrument.Name switch
        {
            AllocHostingMetrics.UsedInstrument => Measured.Used,
            AllocHostingMetrics.OverflowedInstrument => Measured.Overflowed,
            AllocHostingMetrics.RejectedInstrument => Measured.Rejected,
            AllocHostingMetrics.FailuresInstrument => Measured.Failures,
            AllocHostingMetrics.RentsInstrument => Measured.Rents,
            AllocHostingMetrics.ActiveInstrument => Measured.Active,
            AllocHostingMetrics.AllocatedInstrument => Measured.Allocated,
            AllocHostingMetrics.LiveInstrument => Measured.Live,
            AllocHostingMetrics.MappedInstrument => Measured.Mapped,
            _ => null,
        };
        if (kind is { } known)
        {
            listener.EnableMeasurementEvents(instrument, s_states[(int)known]);
        }
    }

    private void OnMeasurement(Instrument instrument, long value, ReadOnlySpan<KeyValuePair<string, object?>> tags, object? state)
    {
        switch ((Measured)state!)
        {
            case Measured.Used:
                RecordUsed(value);
                break;
            case Measured.Overflowed:
                Interlocked.Add(ref _overflowed, value);
                break;
            case Measured.Rejected:
                Interlocked.Add(ref _rejected, value);
                break;
            case Measured.Failures:
                string errorType = Tag(tags, AllocHostingMetrics.ErrorTypeTag)?.ToString() ?? "unknown";
                lock (_failures)
                {
                    _failures[errorType] = _failures.GetValueOrDefault(errorType) + value;
                }

                break;

            // The observable ones arrive only inside RecordObservableInstruments, under _collectLock.
            case Measured.Rents:
                _rents += value;
                break;
            case Measured.Active:
                _active += value;
                break;
            case Measured.Allocated:
                Add(_allocated, Tag(tags, AllocHostingMetrics.AllocatorTag)?.ToString() ?? "unknown", value);
                break;
            case Measured.Live:
                Add(_live, Tag(tags, AllocHostingMetrics.AllocatorTag)?.ToString() ?? "unknown", value);
                break;
            case Measured.Mapped:
                Add(_mapped, Convert.ToInt64(Tag(tags, AllocHostingMetrics.NumaNodeTag) ?? -1L, System.Globalization.CultureInfo.InvariantCulture), value);
                break;
        }
    }

    private void RecordUsed(long value)
    {
        int bucket = AllocHostingMetrics.UsedBoundaries.AsSpan().BinarySearch(value);
        // Prometheus buckets are "less than or equal": a value equal to a boundary belongs to it.
        Interlocked.Increment(ref _usedBuckets[bucket >= 0 ? bucket : ~bucket]);
        Interlocked.Add(ref _usedSum, value);
        Interlocked.Increment(ref _usedCount);
    }

    private static object? Tag(ReadOnlySpan<KeyValuePair<string, object?>> tags, string key)
    {
        foreach (var tag in tags)
        {
            if (tag.Key == key)
            {
                return tag.Value;
            }
        }

        return null;
    }

    private static void Add<TKey>(SortedDictionary<TKey, long> values, TKey key, long value)
        where TKey : notnull =>
        values[key] = values.GetValueOrDefault(key) + value;

    // One boxed value per kind, made once: the state EnableMeasurementEvents hands back with each measurement.
    private static readonly object[] s_states = [.. Enum.GetValues<Measured>().Select(kind => (object)kind)];

    private enum Measured
    {
        Used,
        Overflowed,
        Rejected,
        Failures,
        Rents,
        Active,
        Allocated,
        Live,
        Mapped,
    }
}
