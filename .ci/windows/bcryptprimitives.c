/* A stand-in for Windows' bcryptprimitives.dll, for running the Windows build under Wine.
 *
 * Why: Rust's standard library for x86_64-pc-windows-gnu (since 1.78) takes its random
 * bytes from ProcessPrng in bcryptprimitives.dll, and Wine 8.0 (Debian 12) has no such DLL:
 * every Rust program then fails to start. This shim, placed beside the .exe by
 * .ci/windows/wine-run, provides ProcessPrng by forwarding to RtlGenRandom
 * (SystemFunction036 in advapi32), which Wine has. It is built in CI and never shipped: a
 * real Windows has the real DLL.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
