; boot-count.bs: a floppy guest that really writes to its floppy (built by build-test-images.sh,
; booted by syslinux as a boot-sector image, loaded at 0:7C00 with DL = the boot drive).
; Each boot it reads a counter sector through BIOS int 13h, adds one, writes it back (AH=03h),
; reads it again to check, and prints "floppy-boot-count=N" on the screen and COM1 (the page's
; terminal). Then it waits: a key on the keyboard or the serial port reboots the machine (through
; the keyboard controller, as a reset button would), so the next boot reads what this one wrote.
bits 16
org 0x7c00

COUNTER_SECTOR equ 2        ; cylinder 0, head 0, sector 2 (LBA 1): reserved by mkfs.vfat -R 2
BUF equ 0x0600              ; the counter sector in memory (free low memory, below the stack)
COM1 equ 0x3f8

start:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    sti
    cld
    mov [drive], dl
    call serial_init
    mov si, msg_booted
    call print

    mov ah, 0x02                ; read the counter
    call disk_io
    jc read_failed
    inc word [BUF]
    mov ax, [BUF]
    mov [count], ax
    mov ah, 0x03                ; write it back
    call disk_io
    jc write_failed
    mov word [BUF], 0
    mov ah, 0x02                ; and read it back: what the floppy holds now
    call disk_io
    jc read_failed
    mov ax, [BUF]
    cmp ax, [count]
    jne check_failed
    mov si, msg_count
    call print
    mov ax, [count]
    call print_dec
    mov si, msg_wait
    call print

wait_key:
    hlt                         ; until the next interrupt (the timer's, 18 times a second)
    mov dx, COM1 + 5            ; line status: data ready?
    in al, dx
    test al, 1
    jnz .serial
    mov ah, 0x01                ; a key from the keyboard?
    int 0x16
    jz wait_key
    xor ah, ah
    int 0x16
    jmp reboot
.serial:
    mov dx, COM1
    in al, dx
reboot:
    mov si, msg_reboot
    call print
    mov al, 0xfe                ; the keyboard controller pulses the reset line
    out 0x64, al
    jmp 0xffff:0x0000

read_failed:
    mov si, msg_read_failed
    jmp failed
write_failed:
    mov si, msg_write_failed
    jmp failed
check_failed:
    mov si, msg_check_failed
failed:
    call print
    jmp wait_key

; One sector between BUF and the counter sector: AH = 02h read, 03h write. Three tries, with a
; controller reset between (as floppies want). CF set when all failed.
disk_io:
    mov bp, 3
.try:
    push ax
    mov al, 1
    mov cx, COUNTER_SECTOR      ; CH = cylinder 0, CL = sector
    xor dh, dh
    mov dl, [drive]
    mov bx, BUF
    int 0x13
    pop ax
    jnc .done
    push ax
    xor ah, ah
    mov dl, [drive]
    int 0x13
    pop ax
    dec bp
    jnz .try
    stc
.done:
    ret

; COM1 at 115200 8N1, FIFOs on, no interrupts (polled).
serial_init:
    mov dx, COM1 + 1
    xor al, al
    out dx, al
    mov dx, COM1 + 3
    mov al, 0x80
    out dx, al
    mov dx, COM1
    mov al, 1
    out dx, al
    inc dx
    xor al, al
    out dx, al
    mov dx, COM1 + 3
    mov al, 0x03
    out dx, al
    mov dx, COM1 + 2
    mov al, 0x07
    out dx, al
    mov dx, COM1 + 4
    mov al, 0x03
    out dx, al
    ret

; Prints the zero-terminated string at SI.
print:
    lodsb
    test al, al
    jz .done
    call putc
    jmp print
.done:
    ret

; Prints AL on the screen (BIOS teletype) and COM1.
putc:
    push ax
    mov ah, 0x0e
    mov bx, 0x0007
    int 0x10
    pop ax
    mov ah, al
    mov dx, COM1 + 5
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    mov al, ah
    mov dx, COM1
    out dx, al
    ret

; Prints AX in decimal.
print_dec:
    xor cx, cx
    mov bx, 10
.divide:
    xor dx, dx
    div bx
    push dx
    inc cx
    test ax, ax
    jnz .divide
.digit:
    pop ax
    add al, '0'
    push cx
    call putc
    pop cx
    loop .digit
    ret

msg_booted:       db 13, 10, "sandglass-floppy: booted from the floppy", 13, 10, 0
msg_count:        db "floppy-boot-count=", 0
msg_wait:         db 13, 10, "press a key to reboot", 13, 10, 0
msg_reboot:       db "rebooting", 13, 10, 0
msg_read_failed:  db "floppy-error: read failed", 13, 10, 0
msg_write_failed: db "floppy-error: write failed", 13, 10, 0
msg_check_failed: db "floppy-error: read back differs", 13, 10, 0
drive:            db 0
count:            dw 0

times 510 - ($ - $$) db 0
dw 0xaa55
