<?php
// The session page of bench/session_bench.py: PHP's file sessions, a counter per visitor.
session_start();
$_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
header('Content-Type: text/plain');
echo "visit {$_SESSION['n']}\n";
