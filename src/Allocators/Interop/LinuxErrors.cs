using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Interop;

/// <summary>Turns an errno value into a message naming the failed call, the errno symbol and its description.</summary>
internal static class LinuxErrors
{
    /// <summary>The symbolic name of <paramref name="errno"/> (<c>ENOMEM</c>), or <c>errno N</c> for values not listed.</summary>
    public static string Name(int errno) => errno switch
    {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        18 => "EXDEV",
        19 => "ENODEV",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        27 => "EFBIG",
        28 => "ENOSPC",
        38 => "ENOSYS",
        75 => "EOVERFLOW",
        95 => "EOPNOTSUPP",
        _ => $"errno {errno}",
    };

    /// <summary>A message such as <c>mmap failed with ENOMEM (12): Cannot allocate memory</c>.</summary>
    public static string Describe(string call, int errno) =>
        $"{call} failed with {Name(errno)} ({errno}): {Marshal.GetPInvokeErrorMessage(errno)}";
}
