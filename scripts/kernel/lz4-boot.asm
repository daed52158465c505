; The protected-mode part of a repacked guest kernel (scripts/kernel/repack-kernel.ts): Debian's
; kernel inflates itself from xz, which took the emulated CPU about a third of a cold boot. This
; stub takes its place: it unpacks the kernel's image, stored as LZ4 (legacy frame: independent
; blocks, each after its 4-byte size), to the address the kernel was linked for and jumps to it.
;
; Entered by the kernel's own real-mode setup code at 0x100000 (code32_start): 32-bit protected
; mode, flat segments, interrupts off, paging off, ESI = boot_params. The kernel's entry wants
; ESI = boot_params too. Nothing here needs a stack.
;   nasm -f bin -DLOAD_ADDR=… -DENTRY=… -DPAYLOAD='"kernel.lz4"' -o pm.bin lz4-boot.asm
bits 32
org 0x100000

start:
    cld
    mov ebp, esi                    ; boot_params, kept for the kernel
    mov esi, payload + 4            ; past the legacy frame's magic number
    mov edi, LOAD_ADDR
.block:
    cmp esi, payload_end
    jae .done
    lodsd                           ; the block's compressed size
    lea ebx, [esi + eax]            ; where the block ends
.sequence:
    movzx edx, byte [esi]           ; token: literal length (high nibble), match length - 4 (low)
    inc esi
    mov ecx, edx
    shr ecx, 4
    cmp ecx, 15
    jne .literals
.literal_length:
    movzx eax, byte [esi]
    inc esi
    add ecx, eax
    cmp eax, 255
    je .literal_length
.literals:
    rep movsb
    cmp esi, ebx                    ; a block's last sequence is literals only
    jae .block
    movzx eax, word [esi]           ; match offset, back from the output
    add esi, 2
    and edx, 15
    mov ecx, edx
    cmp ecx, 15
    jne .match
.match_length:
    movzx edx, byte [esi]
    inc esi
    add ecx, edx
    cmp edx, 255
    je .match_length
.match:
    add ecx, 4
    mov edx, esi
    mov esi, edi
    sub esi, eax
    rep movsb                       ; bytewise: a match may overlap its own output
    mov esi, edx
    jmp .sequence
.done:
    mov esi, ebp
    xor ebp, ebp
    xor ebx, ebx
    xor edi, edi
    mov eax, ENTRY
    jmp eax

payload:
    incbin PAYLOAD
payload_end:
