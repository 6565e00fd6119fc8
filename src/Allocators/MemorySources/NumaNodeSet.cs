using System.Numerics;
using System.Text;
using AllocHosting.Allocators.Interop;

namespace AllocHosting.Allocators.MemorySources;

/// <summary>
/// An immutable set of NUMA node ids, the node mask of a <see cref="NumaPolicy"/>.
/// </summary>
/// <remarks>
/// <para>
/// Any node id from 0 to <see cref="MaximumNodeId"/> may be a member: the mask grows by 64-bit words
/// and the kernel is told its true size (<c>maxnode</c> = 64 × words + 1). The seed kept one word and
/// passed <c>maxnode = 9</c>, so only nodes 0–7 were honoured (W-NU1), and node 64 or above
/// overflowed its shift (W-NU2).
/// </para>
/// <para>
/// By default node ids are physical node numbers remapped by the kernel when the task's cpuset
/// changes. <see cref="WithNodeIdMeaning"/> selects the kernel's <c>MPOL_F_STATIC_NODES</c> or
/// <c>MPOL_F_RELATIVE_NODES</c> reading; the kernel rejects both at once, and so does this type.
/// </para>
/// <example><code>
/// var nodes = NumaNodeSet.Of(0, 2);          // nodes 0 and 2
/// var policy = NumaPolicy.Interleave(nodes);  // spread pages over both
/// </code></example>
/// </remarks>
public sealed class NumaNodeSet : IEquatable<NumaNodeSet>
{
    /// <summary>The largest node id accepted (the kernel's own limit is at most 1023 today).</summary>
    public const int MaximumNodeId = 4095;

    // Invariant: no trailing zero words (an empty set has no words), so equal sets have equal arrays.
    private readonly ulong[] _words;

    private NumaNodeSet(ulong[] words, bool staticNodes, bool relativeNodes)
    {
        _words = words;
        StaticNodes = staticNodes;
        RelativeNodes = relativeNodes;
    }

    /// <summary>The empty set (for <see cref="NumaPolicy.Preferred(NumaNodeSet)"/>: "the local node").</summary>
    public static NumaNodeSet Empty { get; } = new([], staticNodes: false, relativeNodes: false);

    /// <summary>Node ids are not remapped when the task's cpuset changes (<c>MPOL_F_STATIC_NODES</c>).</summary>
    public bool StaticNodes { get; }

    /// <summary>Node ids are relative to the task's allowed nodes (<c>MPOL_F_RELATIVE_NODES</c>).</summary>
    public bool RelativeNodes { get; }

    /// <summary>Whether the set has no node.</summary>
    public bool IsEmpty => _words.Length == 0;

    /// <summary>The number of nodes in the set.</summary>
    public int Count
    {
        get
        {
            int count = 0;
            foreach (ulong word in _words)
            {
                count += BitOperations.PopCount(word);
            }

            return count;
        }
    }

    /// <summary>The node ids in ascending order.</summary>
    public IReadOnlyList<int> Nodes
    {
        get
        {
            var nodes = new List<int>(Count);
            for (int w = 0; w < _words.Length; w++)
            {
                ulong word = _words[w];
                while (word != 0)
                {
                    nodes.Add((w * 64) + BitOperations.TrailingZeroCount(word));
                    word &= word - 1;
                }
            }

            return nodes;
        }
    }

    /// <summary>The kernel's <c>maxnode</c> argument for this mask: 0 when empty, otherwise 64 × words + 1 (W-NU1).</summary>
    internal ulong MaxNode => _words.Length == 0 ? 0 : (64 * (ulong)_words.Length) + 1;

    /// <summary>The mask words passed to the kernel (bit <c>i</c> of word <c>w</c> is node <c>64w + i</c>).</summary>
    internal ReadOnlySpan<ulong> MaskWords => _words;

    /// <summary>The mode flags OR-ed into the policy mode.</summary>
    internal int ModeFlags =>
        (StaticNodes ? LinuxConstants.MPOL_F_STATIC_NODES : 0) | (RelativeNodes ? LinuxConstants.MPOL_F_RELATIVE_NODES : 0);

    /// <summary>Creates a set of the given nodes.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A node id is negative or above <see cref="MaximumNodeId"/>.</exception>
    public static NumaNodeSet Of(params ReadOnlySpan<int> nodes)
    {
        int highest = -1;
        foreach (int node in nodes)
        {
            ValidateNode(node, nameof(nodes));
            highest = Math.Max(highest, node);
        }

        if (highest < 0)
        {
            return Empty;
        }

        var words = new ulong[(highest / 64) + 1];
        foreach (int node in nodes)
        {
            words[node / 64] |= 1UL << (node % 64);
        }

        return new NumaNodeSet(words, staticNodes: false, relativeNodes: false);
    }

    /// <summary>
    /// The set whose bit <c>i</c> of word <c>w</c> is node <c>64w + i</c>, as the kernel reports it
    /// (<c>get_mempolicy</c>); words beyond <see cref="MaximumNodeId"/> are ignored, trailing zero words dropped.
    /// </summary>
    internal static NumaNodeSet FromMask(ReadOnlySpan<ulong> words)
    {
        words = words[..Math.Min(words.Length, (MaximumNodeId / 64) + 1)];
        int length = words.Length;
        while (length > 0 && words[length - 1] == 0)
        {
            length--;
        }

        return length == 0 ? Empty : new NumaNodeSet(words[..length].ToArray(), staticNodes: false, relativeNodes: false);
    }

    /// <summary>Creates a set of the given nodes.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="nodes"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A node id is negative or above <see cref="MaximumNodeId"/>.</exception>
    public static NumaNodeSet Of(IEnumerable<int> nodes)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        return Of([.. nodes]);
    }

    /// <summary>Whether <paramref name="node"/> is in the set (false for any id outside the valid range).</summary>
    public bool Contains(int node) =>
        node >= 0 && node / 64 < _words.Length && (_words[node / 64] & (1UL << (node % 64))) != 0;

    /// <summary>This set plus <paramref name="node"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="node"/> is negative or above <see cref="MaximumNodeId"/>.</exception>
    public NumaNodeSet With(int node)
    {
        ValidateNode(node, nameof(node));
        var words = new ulong[Math.Max(_words.Length, (node / 64) + 1)];
        _words.CopyTo(words, 0);
        words[node / 64] |= 1UL << (node % 64);
        return new NumaNodeSet(words, StaticNodes, RelativeNodes);
    }

    /// <summary>This set without <paramref name="node"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="node"/> is negative or above <see cref="MaximumNodeId"/>.</exception>
    public NumaNodeSet Without(int node)
    {
        ValidateNode(node, nameof(node));
        if (!Contains(node))
        {
            return this;
        }

        var words = (ulong[])_words.Clone();
        words[node / 64] &= ~(1UL << (node % 64));
        int length = words.Length;
        while (length > 0 && words[length - 1] == 0)
        {
            length--;
        }

        return new NumaNodeSet(words[..length], StaticNodes, RelativeNodes);
    }

    /// <summary>
    /// The same nodes read as static (<c>MPOL_F_STATIC_NODES</c>) or relative
    /// (<c>MPOL_F_RELATIVE_NODES</c>) node ids, or neither.
    /// </summary>
    /// <exception cref="ArgumentException">Both are requested: the kernel rejects the combination (W-NU2).</exception>
    public NumaNodeSet WithNodeIdMeaning(bool staticNodes, bool relativeNodes)
    {
        if (staticNodes && relativeNodes)
        {
            throw new ArgumentException(
                "A NUMA node set cannot use static and relative node ids at once (MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES are mutually exclusive; the kernel rejects both with EINVAL).",
                nameof(relativeNodes));
        }

        return new NumaNodeSet(_words, staticNodes, relativeNodes);
    }

    /// <inheritdoc />
    public bool Equals(NumaNodeSet? other) =>
        other is not null
        && StaticNodes == other.StaticNodes
        && RelativeNodes == other.RelativeNodes
        && _words.AsSpan().SequenceEqual(other._words);

    /// <inheritdoc />
    public override bool Equals(object? obj) => Equals(obj as NumaNodeSet);

    /// <inheritdoc />
    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(StaticNodes);
        hash.Add(RelativeNodes);
        foreach (ulong word in _words)
        {
            hash.Add(word);
        }

        return hash.ToHashCode();
    }

    /// <summary>The nodes as a list such as <c>{0,2}</c>, with <c>static</c> or <c>relative</c> when set.</summary>
    public override string ToString()
    {
        var text = new StringBuilder("{");
        text.AppendJoin(',', Nodes);
        text.Append('}');
        if (StaticNodes)
        {
            text.Append(" static");
        }

        if (RelativeNodes)
        {
            text.Append(" relative");
        }

        return text.ToString();
    }

    private static void ValidateNode(int node, string parameterName)
    {
        if (node is < 0 or > MaximumNodeId)
        {
            throw new ArgumentOutOfRangeException(parameterName, node, $"A NUMA node id must be between 0 and {MaximumNodeId}.");
        }
    }
}
