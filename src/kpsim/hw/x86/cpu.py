"""A simulated x86-64 CPU: CR0/CR3/CR4, EFER, PKRU, IA32_PKRS, a TLB, and the access API.

Models what kpsim needs of a 4-level-paging CPU with PCID and PKS (Intel SDM vol. 3A
chapter 4; Linux: ``native_write_cr3``/``build_cr3`` in ``arch/x86/mm/tlb.c``,
``invpcid_flush_*`` in ``arch/x86/include/asm/invpcid.h``, ``pks_write_pkrs`` of the
PKS series writing ``MSR_IA32_PKRS``). Control registers and MSRs are written through
the instructions that write them (:meth:`X86Cpu.mov_cr0`, :meth:`mov_cr3`,
:meth:`mov_cr4`, :meth:`wrmsr`, :meth:`wrpkru`); a write setting a reserved bit
raises #GP. Faults are values (:mod:`kpsim.hw.x86.fault`) returned by
:meth:`translate`; the access API (:meth:`load`, :meth:`store`, :meth:`fetch`)
raises them as :class:`~kpsim.errors.AccessFault` and sets CR2 on #PF.

Hardware A/D updates: a successful access sets A in every entry it used and, for a
write, D in the leaf (SDM 4.8); a write through a TLB entry cached with D=0 walks
again, as hardware does to set D. A #PF drops the TLB entries for the faulting page
(SDM 4.10.4.1).

Left out: segmentation (flat, base 0), CPL other than 0 and 3, EFLAGS beyond AC,
accesses that cross a page, shadow stacks (CET), SGX, and CR4 bits other than PGE,
PCIDE, SMEP, SMAP, PKE and PKS.
"""

from __future__ import annotations

from kpsim.errors import AccessFault, InputError
from kpsim.hw.physmem import PhysicalMemory
from kpsim.hw.x86 import pte as e
from kpsim.hw.x86.fault import GeneralProtection, PageFault, X86Fault
from kpsim.hw.x86.mmu import Leaf, Paging, access_bits, access_error, canonical, walk
from kpsim.hw.x86.pkeys import MSR_EFER, MSR_IA32_PKRS, PKR_VALID_MASK
from kpsim.hw.x86.tlb import Tlb

# Control-register bits (Linux: arch/x86/include/uapi/asm/processor-flags.h).
CR0_PE = 1 << 0
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR3_PCID_MASK = 0xFFF
CR3_NOFLUSH = 1 << 63
CR4_PAE = 1 << 5
CR4_PGE = 1 << 7
CR4_PCIDE = 1 << 17
CR4_SMEP = 1 << 20
CR4_SMAP = 1 << 21
CR4_PKE = 1 << 22
CR4_PKS = 1 << 24
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11
EFER_MODELLED = EFER_LME | EFER_LMA | EFER_NXE
INVPCID_ADDR, INVPCID_SINGLE, INVPCID_ALL_GLOBAL, INVPCID_ALL_NONGLOBAL = 0, 1, 2, 3


class X86Cpu:
    """One logical processor in IA-32e mode with 4-level paging."""

    def __init__(self, mem: PhysicalMemory, *, maxphyaddr: int = 46) -> None:
        if not 36 <= maxphyaddr <= e.MAX_MAXPHYADDR:
            raise InputError(f"MAXPHYADDR {maxphyaddr} out of range 36-52")
        self.mem = mem
        self.maxphyaddr = maxphyaddr
        self.cr0 = CR0_PE | CR0_PG | CR0_WP
        self.cr3 = 0
        self.cr4 = CR4_PAE | CR4_PGE
        self.efer = EFER_LME | EFER_LMA | EFER_NXE
        self.pkru = 0
        self.pkrs = 0
        self.cr2 = 0
        self._ac = False
        self._paging: Paging | None = None  # paging() cached until a register changes
        self.tlb = Tlb()
        self.walks = 0  # page walks made (TLB misses)
        self.tlb_hits = 0
        self.stores = 0  # kernel-visible stores (store, store_table: one per entry)
        self.pkrs_writes = 0  # WRMSR to IA32_PKRS
        self.invlpgs = 0
        self.invpcids = 0
        self.cr3_writes = 0
        self.faults: dict[str, int] = {}

    # -- registers -------------------------------------------------------------
    @property
    def pcid(self) -> int:
        return self.cr3 & CR3_PCID_MASK if self.cr4 & CR4_PCIDE else 0

    @property
    def ac(self) -> bool:
        """EFLAGS.AC (STAC/CLAC: the SMAP override)."""
        return self._ac

    @ac.setter
    def ac(self, value: bool) -> None:
        self._ac = value
        self._paging = None

    def paging(self) -> Paging:
        """The control-register state the walk and the rights check read (cached: every
        write to CR0, CR4, EFER, PKRU, IA32_PKRS or EFLAGS.AC drops it)."""
        got = self._paging
        if got is None:
            got = self._paging = self._make_paging()
        return got

    def _make_paging(self) -> Paging:
        cr4 = self.cr4
        return Paging(
            maxphyaddr=self.maxphyaddr,
            nxe=bool(self.efer & EFER_NXE),
            wp=bool(self.cr0 & CR0_WP),
            pke=bool(cr4 & CR4_PKE),
            pks=bool(cr4 & CR4_PKS),
            smep=bool(cr4 & CR4_SMEP),
            smap=bool(cr4 & CR4_SMAP),
            pkru=self.pkru,
            pkrs=self.pkrs,
            ac=self._ac,
        )

    def mov_cr0(self, value: int) -> None:
        """MOV to CR0. Paging stays on (CR0.PG=0 is not modelled); WP takes effect for
        the next access (the TLB holds R/W, not the WP outcome)."""
        if not value & CR0_PG or not value & CR0_PE or value >> 32:
            raise AccessFault(GeneralProtection(f"CR0 value {value:#x} not allowed"))
        self.cr0 = value
        self._paging = None

    def mov_cr3(self, value: int) -> None:
        """MOV to CR3 (SDM 4.10.4.1): PCID in bits 11:0 with CR4.PCIDE=1, bit 63 no-flush."""
        pcide = bool(self.cr4 & CR4_PCIDE)
        noflush = bool(value & CR3_NOFLUSH)
        if noflush and not pcide:
            raise AccessFault(GeneralProtection("CR3 bit 63 set with CR4.PCIDE=0"))
        value &= ~CR3_NOFLUSH
        if value >> self.maxphyaddr:
            raise AccessFault(GeneralProtection(f"CR3 {value:#x} sets bits above MAXPHYADDR"))
        self.cr3 = value
        self.cr3_writes += 1
        if not noflush:
            self.tlb.drop_pcid(self.pcid)

    def mov_cr4(self, value: int) -> None:
        """MOV to CR4. Setting PCIDE needs CR3[11:0]=0; toggling PGE or clearing PCIDE
        flushes every TLB entry, global ones included."""
        old = self.cr4
        if not value & CR4_PAE:
            raise AccessFault(GeneralProtection("CR4.PAE cleared in IA-32e mode"))
        if value & CR4_PCIDE and not old & CR4_PCIDE and self.cr3 & CR3_PCID_MASK:
            raise AccessFault(GeneralProtection("CR4.PCIDE set with CR3[11:0] != 0"))
        self.cr4 = value
        self._paging = None
        if (old ^ value) & CR4_PGE or (old & CR4_PCIDE and not value & CR4_PCIDE):
            self.tlb.drop_all()

    def wrmsr(self, msr: int, value: int) -> None:
        """WRMSR: IA32_PKRS (0x6e1, bits 63:32 reserved) and IA32_EFER (NXE)."""
        if msr == MSR_IA32_PKRS:
            if value & ~PKR_VALID_MASK:
                raise AccessFault(GeneralProtection(f"IA32_PKRS {value:#x} sets reserved bits"))
            self.pkrs = value  # no TLB flush: rights are read on each access
            self._paging = None
            self.pkrs_writes += 1
        elif msr == MSR_EFER:
            if value & ~EFER_MODELLED or (value ^ self.efer) & (EFER_LME | EFER_LMA):
                raise AccessFault(GeneralProtection(f"IA32_EFER {value:#x} not allowed"))
            self.efer = value
            self._paging = None
        else:
            raise AccessFault(GeneralProtection(f"WRMSR to unmodelled MSR {msr:#x}"))

    def rdmsr(self, msr: int) -> int:
        if msr == MSR_IA32_PKRS:
            return self.pkrs
        if msr == MSR_EFER:
            return self.efer
        raise AccessFault(GeneralProtection(f"RDMSR of unmodelled MSR {msr:#x}"))

    def wrpkru(self, value: int) -> None:
        """WRPKRU (EAX; ECX and EDX must be 0): #UD without CR4.PKE, modelled as #GP."""
        if not self.cr4 & CR4_PKE:
            raise AccessFault(GeneralProtection("WRPKRU with CR4.PKE=0 (#UD)"))
        if value & ~PKR_VALID_MASK:
            raise AccessFault(GeneralProtection(f"PKRU {value:#x} wider than 32 bits"))
        self.pkru = value
        self._paging = None

    # -- TLB maintenance -------------------------------------------------------
    def invlpg(self, va: int) -> None:
        """INVLPG: the page's entries for the current PCID and global ones (a
        non-canonical address is a no-op)."""
        self.invlpgs += 1
        if canonical(va):
            self.tlb.drop_page(self.pcid, va, globals_=True)

    def invpcid(self, kind: int, pcid: int = 0, va: int = 0) -> None:
        """INVPCID with the descriptor (``pcid``, ``va``), types 0-3 (SDM INVPCID)."""
        if kind not in (0, 1, 2, 3):
            raise AccessFault(GeneralProtection(f"INVPCID type {kind}"))
        if not 0 <= pcid <= CR3_PCID_MASK:
            raise AccessFault(GeneralProtection(f"INVPCID PCID {pcid:#x} above 0xfff"))
        if kind in (0, 1) and pcid and not self.cr4 & CR4_PCIDE:
            raise AccessFault(GeneralProtection("INVPCID of PCID != 0 with CR4.PCIDE=0"))
        self.invpcids += 1
        if kind == INVPCID_ADDR:
            if not canonical(va):
                raise AccessFault(GeneralProtection(f"INVPCID address {va:#x}", va))
            self.tlb.drop_page(pcid, va, globals_=False)
        elif kind == INVPCID_SINGLE:
            self.tlb.drop_pcid(pcid)
        elif kind == INVPCID_ALL_GLOBAL:
            self.tlb.drop_all()
        else:
            self.tlb.drop_non_global()

    # -- translation -----------------------------------------------------------
    def translate(
        self, va: int, *, write: bool = False, fetch: bool = False, user: bool = False
    ) -> tuple[int, Leaf] | X86Fault:
        """The physical address for one access at ``va``, or the fault it raises."""
        if not canonical(va):
            return GeneralProtection(f"non-canonical address {va:#x}", va)
        paging = self.paging()
        bits = access_bits(write=write, fetch=fetch, user=user, paging=paging)
        pcid = self.pcid
        leaf = self.tlb.lookup(pcid, va)
        if leaf is not None and write and not leaf.dirty:
            leaf = None  # hardware walks again to set D
        if leaf is None:
            self.walks += 1
            got = walk(self.mem, self.cr3, va, paging, bits)
            if isinstance(got, PageFault):
                self.tlb.drop_page(pcid, va, globals_=True)
                return got
            leaf = got
            code = access_error(leaf, write=write, fetch=fetch, user=user, paging=paging, bits=bits)
            if code:
                self.tlb.drop_page(pcid, va, globals_=True)
                return PageFault(va, code)
            leaf = self._set_accessed_dirty(leaf, write)
            self.tlb.fill(pcid, va, leaf, pge=bool(self.cr4 & CR4_PGE))
        else:
            self.tlb_hits += 1
            code = access_error(leaf, write=write, fetch=fetch, user=user, paging=paging, bits=bits)
            if code:
                self.tlb.drop_page(pcid, va, globals_=True)
                return PageFault(va, code)
        return leaf.pa(va), leaf

    def _set_accessed_dirty(self, leaf: Leaf, write: bool) -> Leaf:
        mem = self.mem
        for entry_pa in leaf.path:
            v = mem.read64(entry_pa)
            if not v & e.A:
                mem.write64(entry_pa, v | e.A)
        if write and not leaf.dirty:
            last = leaf.path[-1]
            mem.write64(last, mem.read64(last) | e.D)
            return Leaf(
                leaf.page_pa,
                leaf.level,
                leaf.writable,
                leaf.user,
                leaf.nx,
                leaf.pkey,
                leaf.global_,
                True,
                leaf.entry | e.D | e.A,
                leaf.path,
            )
        return leaf

    # -- the access API --------------------------------------------------------
    def access_user(self, va: int, write: bool, value: int = 0) -> bool:
        """One user-mode (CPL 3) byte load or store; False if it faulted (#PF: CR2 set
        and counted, as :meth:`load`/:meth:`store` would, without raising)."""
        got = self.translate(va, write=write, fetch=False, user=True)
        if not isinstance(got, tuple):
            self._note_fault(got)
            return False
        if write:
            self.mem.write(got[0], value & 0xFF, 1)
            self.stores += 1
        return True

    def _note_fault(self, got: X86Fault) -> None:
        if isinstance(got, PageFault):
            self.cr2 = got.cr2
            kind = "pk" if got.pk else ("prot" if got.present else "not_present")
            self.faults[kind] = self.faults.get(kind, 0) + 1

    def _pa(self, va: int, size: int, *, write: bool, fetch: bool, user: bool) -> int:
        if size not in (1, 2, 4, 8) or va % size:
            raise InputError(
                f"access of {size} bytes at {va:#x}: the model needs natural alignment"
            )
        got = self.translate(va, write=write, fetch=fetch, user=user)
        if isinstance(got, tuple):
            return got[0]
        self._note_fault(got)
        raise AccessFault(got)

    def load(self, va: int, size: int = 8, *, user: bool = False) -> int:
        """Load ``size`` bytes little-endian from ``va``; raise AccessFault."""
        return self.mem.read(self._pa(va, size, write=False, fetch=False, user=user), size)

    def store(self, va: int, value: int, size: int = 8, *, user: bool = False) -> None:
        """Store ``size`` bytes little-endian at ``va``; raise AccessFault."""
        self.mem.write(self._pa(va, size, write=True, fetch=False, user=user), value, size)
        self.stores += 1

    def try_store(
        self, va: int, value: int, size: int = 8, *, user: bool = False
    ) -> X86Fault | None:
        """:meth:`store`, the fault returned as a value instead of raised (None: done)."""
        try:
            self.store(va, value, size, user=user)
        except AccessFault as exc:
            fault: X86Fault = exc.fault
            return fault
        return None

    def store_table(self, table_va: int, index: object, values: object) -> int:
        """Store a batch of 64-bit entries into the 4 KiB page at ``table_va`` (CPL 0).

        ``index`` and ``values`` are numpy-compatible (an int, a slice or arrays of word
        indices). The page is translated and checked once, as the first store of the
        batch would be (every store hits the same TLB entry with the same rights); the
        number of stores is returned.
        """
        pa = self._pa(table_va & ~0xFFF, 8, write=True, fetch=False, user=False)
        frame = self.mem.frame(pa >> 12)
        frame[index] = values  # type: ignore[call-overload]
        if isinstance(index, slice):
            n = len(range(*index.indices(512)))
        elif isinstance(index, int):
            n = 1
        else:
            n = len(index)  # type: ignore[arg-type]
        self.stores += n
        if n > 1:
            self.tlb_hits += n - 1
        return n

    def zero_page(self, va: int) -> None:
        """``clear_page``: 512 stores to the page at ``va``, one check."""
        self.store_table(va, slice(None), 0)

    def counters(self) -> dict[str, int]:
        """This CPU's event counts (``Machine.counters`` sums them over CPUs)."""
        out = {
            "tlb_hit": self.tlb_hits,
            "walk": self.walks,
            "store": self.stores,
            "pkrs_write": self.pkrs_writes,
            "invlpg": self.invlpgs,
            "invpcid": self.invpcids,
            "cr3_write": self.cr3_writes,
        }
        for k, v in self.faults.items():
            out[f"fault_{k}"] = v
        return out

    def fetch(self, va: int, *, user: bool = False) -> int:
        """An instruction fetch of one byte at ``va`` (rights only; nothing runs)."""
        return self.mem.read(self._pa(va, 1, write=False, fetch=True, user=user), 1)
