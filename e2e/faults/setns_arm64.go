package faults

// sysSetns is setns(2)'s number on arm64 (the syscall package does not name it).
const sysSetns = 268
