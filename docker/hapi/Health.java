// Health check of the HAPI FHIR container, whose image has no shell, curl or wget: the JVM it ships runs this file
// directly (java Health.java) and exits 0 when GET /fhir/metadata answers 200.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

public class Health {
  public static void main(String[] args) throws Exception {
    HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(3)).build();
    HttpRequest request = HttpRequest.newBuilder(URI.create("http://127.0.0.1:8080/fhir/metadata")).timeout(Duration.ofSeconds(10)).build();
    int status = client.send(request, HttpResponse.BodyHandlers.discarding()).statusCode();
    System.exit(status == 200 ? 0 : 1);
  }
}
