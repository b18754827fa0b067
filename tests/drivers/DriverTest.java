// pgJDBC through pgmux in transaction mode: many threads, each with its own connection and
// pgJDBC's default prepareThreshold (5), so statements become named server-side statements.
// Usage: java -cp postgresql.jar DriverTest.java host port db user password clients
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.*;

public class DriverTest {
    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/" + a[2];
        Properties p = new Properties();
        p.setProperty("user", a[3]);
        p.setProperty("password", a[4]);
        p.setProperty("sslmode", "disable");
        int clients = Integer.parseInt(a[5]);
        AtomicInteger failures = new AtomicInteger();
        AtomicLong checks = new AtomicLong();
        ExecutorService pool = Executors.newFixedThreadPool(clients);
        List<Future<?>> fs = new ArrayList<>();
        for (int c = 0; c < clients; c++) {
            final int id = c;
            fs.add(pool.submit(() -> {
                try (Connection conn = DriverManager.getConnection(url, p)) {
                    PreparedStatement add = conn.prepareStatement("select ?::int + ?::int, ?::text");
                    for (int i = 0; i < 8; i++) {
                        add.setInt(1, i);
                        add.setInt(2, id);
                        add.setString(3, "c" + id);
                        try (ResultSet rs = add.executeQuery()) {
                            rs.next();
                            if (rs.getInt(1) != i + id || !rs.getString(2).equals("c" + id))
                                throw new RuntimeException("wrong result");
                            checks.incrementAndGet();
                        }
                    }
                    // inside an explicit transaction
                    conn.setAutoCommit(false);
                    PreparedStatement ins = conn.prepareStatement("insert into drv(client, i) values (?, ?)");
                    PreparedStatement cnt = conn.prepareStatement("select count(*) from drv where client = ?");
                    for (int i = 0; i < 6; i++) {
                        ins.setInt(1, id);
                        ins.setInt(2, i);
                        ins.executeUpdate();
                        cnt.setInt(1, id);
                        try (ResultSet rs = cnt.executeQuery()) {
                            rs.next();
                            if (rs.getInt(1) != i + 1) throw new RuntimeException("wrong count");
                            checks.incrementAndGet();
                        }
                    }
                    conn.commit();
                    conn.setAutoCommit(true);
                    // batch (pipelined) execution of a prepared insert
                    PreparedStatement b = conn.prepareStatement("insert into drv(client, i) values (?, ?)");
                    for (int i = 100; i < 110; i++) {
                        b.setInt(1, id);
                        b.setInt(2, i);
                        b.addBatch();
                    }
                    b.executeBatch();
                    cnt.setInt(1, id);
                    try (ResultSet rs = cnt.executeQuery()) {
                        rs.next();
                        if (rs.getInt(1) != 16) throw new RuntimeException("wrong batch count " + rs.getInt(1));
                        checks.incrementAndGet();
                    }
                } catch (Exception e) {
                    if (failures.incrementAndGet() <= 5) e.printStackTrace();
                }
            }));
        }
        for (Future<?> f : fs) f.get();
        pool.shutdown();
        System.out.println("pgjdbc: clients=" + clients + " checks=" + checks.get() + " failures=" + failures.get());
        System.exit(failures.get() == 0 && checks.get() == (long) clients * 15 ? 0 : 1);
    }
}
