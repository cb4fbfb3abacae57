<?php
// page.mustache of bench/site in PHP, with PHP's file sessions (bench/session_bench.py).
session_start();
$_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
$visits = $_SESSION['n'];
$items = ['one', 'two', 'three'];
?>
<!doctype html>
<html><head><title>Page</title></head>
<body><h1>Hello world</h1><p>Visit <?= $visits ?></p>
<ul><?php foreach ($items as $item) { echo '<li>' . htmlspecialchars($item) . '</li>'; } ?></ul></body></html>
